"""The committed search corpus: reproducible from its seed, well-formed, with near-miss distractors."""

from __future__ import annotations

import json

from regrpo.tasks.facts import CORPUS_PATH, ENTITY_KINDS, build_corpus, load_facts, write_corpus


def test_the_committed_corpus_is_what_the_generator_writes(tmp_path):
    regenerated = write_corpus(tmp_path / "corpus.jsonl")
    assert regenerated.read_bytes() == CORPUS_PATH.read_bytes()
    assert load_facts() == build_corpus()


def test_every_line_has_the_agreed_fields_and_unique_ids():
    lines = [json.loads(line) for line in CORPUS_PATH.read_text().splitlines()]
    assert all(set(record) == {"id", "title", "text", "attributes"} for record in lines)
    assert len({record["id"] for record in lines}) == len(lines)
    assert all({"kind", "name"} <= record["attributes"].keys() for record in lines)


def test_entities_state_their_numbers_verbatim_and_names_are_unique():
    facts = [f for f in load_facts() if "distractor_of" not in f.attributes]
    assert {f.attributes["kind"] for f in facts} == set(ENTITY_KINDS)
    assert len({str(f.attributes["name"]).lower() for f in facts}) == len(facts)
    numeric = {"population", "founded", "price", "length_m", "launched", "crew", "height_m"}
    for fact in facts:
        for key in numeric & fact.attributes.keys():
            value = fact.attributes[key]
            shown = f"{value:.2f}" if key == "price" else str(value)
            assert shown in fact.text, (fact.id, key)


def test_distractors_share_a_name_with_a_real_entity():
    facts = load_facts()
    names = {f.attributes["name"] for f in facts if "distractor_of" not in f.attributes}
    distractors = [f for f in facts if "distractor_of" in f.attributes]
    assert len(distractors) >= 20
    for fact in distractors:
        assert fact.attributes["distractor_of"] in names
        assert fact.attributes["distractor_of"] in fact.title

"""HTTP: the OpenAI-compatible agent endpoint (`regrpo serve`) and model server (`regrpo serve-model`)."""

"""Fast CPU tier fixtures: tiny, randomly initialised SD1.5-shaped components built offline."""

from __future__ import annotations

import pytest

from semdraw.tiny import make_tiny_pipeline, make_tokenizer  # noqa: F401  (re-exported for tests)


@pytest.fixture(scope="session")
def tiny_pipe(tmp_path_factory):
    return make_tiny_pipeline(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_model(tiny_pipe):
    from semdraw import Model

    return Model.from_pipeline(tiny_pipe)

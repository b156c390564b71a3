"""Helpers of the service tests: a real uvicorn server on a free loopback port, API keys,
and a small seeded label database (written through storage.queries)."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

import httpx


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(app: Any) -> Iterator[str]:
    """Run ``app`` under uvicorn in a thread on loopback; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def make_key(url: str, name: str = "test", *, admin: bool = False) -> str:
    """Create an API key (an admin key when ``admin``) in the database at ``url``; returns the secret."""
    from neurolabel.service.auth import create_key
    from neurolabel.storage.db import make_engine, session_factory

    engine = make_engine(url)
    try:
        with session_factory(engine)() as s:
            key = create_key(session=s, name=name, admin=admin)
            s.commit()
        return key.secret
    finally:
        engine.dispose()


def client(base: str, key: str | None = None) -> httpx.Client:
    """An HTTP client for the live server (with ``Authorization`` when ``key`` is given)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=base, headers=headers, timeout=120)


@contextmanager
def fresh_database(kind: str, tmp_dir: Any) -> Iterator[str]:
    """A fresh, migrated database URL of ``kind`` (``sqlite`` or ``postgresql``), dropped after.

    For module-scoped fixtures (the conftest's ``db_url`` is per test)."""
    import uuid

    from neurolabel.storage.db import upgrade

    if kind == "sqlite":
        url = f"sqlite:///{tmp_dir}/labels-{uuid.uuid4().hex[:8]}.db"
        upgrade(url)
        yield url
        return
    import psycopg

    from tests.conftest import PG_ADMIN_URL

    name = f"nl_svc_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    url = f"{base}/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        from neurolabel.storage.db import dispose_engines

        dispose_engines()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


ONTO = "http://example.org/onto#"
"""Namespace of the small test ontology."""


def small_ontology() -> Any:
    """entity > animal > {dog, cat}; entity > vehicle > car."""
    from neurolabel.ontology.model import from_edges

    names = ["entity", "animal", "dog", "cat", "vehicle", "car"]
    parents = [[], [0], [1], [1], [0], [4]]
    return from_edges(name="small", source="test", iris=[ONTO + n for n in names],
                      labels=[(n,) for n in names], parents=parents)


def _window(words: list[str], acts: list[float], wid: int, split: str, kind: str):
    from neurolabel.core.types import ActivationRecord

    return ActivationRecord(tokens=tuple(words), activations=tuple(acts), window_id=wid, split=split, kind=kind)


def seed(url: str) -> None:
    """Seed the ``tiny`` model: neuron 0:1 fires on dogs (label "dogs and puppies", concept
    dog), 0:2 on cars (label "cars", concept car), 1:0 on cats (rejected label), 1:3 recorded
    but unexplained (one failed llm_summary attempt). Written through storage.queries."""
    from neurolabel.core.types import Explanation, NeuronId, NeuronRecord, NeuronStats, ScoreResult
    from neurolabel.storage.db import make_engine, session_factory
    from neurolabel.storage.queries import record_failures, save_explanations, save_neuron_records, upsert_model

    def rec(layer: int, index: int, word: str) -> NeuronRecord:
        top = tuple(
            _window(["The", f" {word}", " ran", " home", "."], [0.0, 4.0 - i * 0.5, 0.3, 0.0, -0.1],
                    10 + i, "explain" if i % 2 else "score", "top")
            for i in range(4)
        )
        rnd = tuple(
            _window(["A", " quiet", " day", f" {i}"], [0.1 * i, -0.2, 0.05, 0.0], 100 + i,
                    "score" if i % 2 else "explain", "random")
            for i in range(4)
        )
        stats = NeuronStats(count=1000, mean=0.1, std=0.5, max=4.0, min=-0.3, frac_active=0.4)
        return NeuronRecord(model="tiny", neuron=NeuronId(layer, index), top=top, random=rnd, stats=stats)

    def expl(layer: int, index: int, text: str, score: float, iri: str | None, explainer: str) -> Explanation:
        structured = {"manchester": iri.rsplit("#", 1)[1], "iris": [iri]} if iri else {}
        return Explanation(
            model="tiny", neuron=NeuronId(layer, index), explainer=explainer, explainer_version="1",
            text=text, structured=structured,
            score=ScoreResult(score=score, scorer="correlation", simulator="symbolic",
                              parts={"top_only": score, "random_only": score / 2}, n_tokens=40),
        )

    engine = make_engine(url)
    try:
        with session_factory(engine)() as s:
            upsert_model(session=s, name="tiny", architecture="LlamaForCausalLM", source="test",
                         unit_map={}, n_layers=2, n_units=4)
            save_neuron_records(session=s, records=[rec(0, 1, "dog"), rec(0, 2, "car"),
                                                    rec(1, 0, "cat"), rec(1, 3, "tree")])
            save_explanations(session=s, threshold=0.3, explanations=[
                expl(0, 1, "dogs and puppies", 0.82, ONTO + "dog", "concept_induction"),
                expl(0, 1, "the word dog", 0.55, None, "pmi"),
                expl(0, 2, "cars", 0.61, ONTO + "car", "concept_induction"),
                expl(1, 0, "cats", 0.12, ONTO + "cat", "concept_induction"),
            ])
            record_failures(session=s, model="tiny", failures=[
                (NeuronId(1, 3), "llm_summary", "1", "unparseable answer from the language model: 'tree tree'"),
            ])
            s.commit()
    finally:
        engine.dispose()


def tiny_model_dir(path: Any, *, seed: int = 0) -> str:
    """A tiny random Llama model (2 layers × 32 MLP units) with SmolLM2's tokenizer, saved
    as a local Hugging Face folder: loads and records in well under a second."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from neurolabel.core.assets import smollm2_dir

    tok = AutoTokenizer.from_pretrained(smollm2_dir())
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return str(path)


CORPUS_LINES = [
    "The dog chased the cat across the garden.",
    "A small bird sang in the old oak tree.",
    "She drove her car to the city market.",
    "The river flows past the quiet village.",
    "My brother plays the guitar and the piano.",
    "The horse and the cow stood in the field.",
    "He ate bread, cheese and an apple for lunch.",
    "The ship sailed across the ocean to a distant island.",
    "A doctor and a nurse work at the hospital.",
    "The children read books in the library.",
]


def small_corpus(path: Any, *, repeat: int = 8) -> str:
    """A small text corpus file (one sentence a line)."""
    from pathlib import Path

    p = Path(path)
    p.write_text("\n".join(CORPUS_LINES * repeat) + "\n", encoding="utf-8")
    return str(p)

"""The plugin registry under concurrent first use: threads that arrive while the built-in
modules are still being imported wait for them, and never see an empty registry."""

from __future__ import annotations

import sys
import textwrap
import threading

from neurolabel.core.registry import Registry


def test_concurrent_first_lookups_wait_for_the_imports(tmp_path, monkeypatch):
    # a built-in plugin module whose import is slow, and signals when it has started
    (tmp_path / "nl_slow_plugin.py").write_text(textwrap.dedent("""
        import threading, time
        from tests.core.test_registry import REG, STARTED
        STARTED.set()
        time.sleep(0.5)
        @REG.register("slow")
        def make():
            return "made"
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    global REG, STARTED
    REG = Registry("testers", ("nl_slow_plugin",))
    STARTED = threading.Event()
    results: dict[str, object] = {}

    def first() -> None:
        results["first"] = REG["slow"]()

    def second() -> None:
        STARTED.wait(10)  # the first thread is inside the import right now
        try:
            results["second"] = REG["slow"]()
        except Exception as exc:  # noqa: BLE001 - the bug: "unknown tester 'slow'; known: none"
            results["second"] = exc

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    sys.modules.pop("nl_slow_plugin", None)
    assert results == {"first": "made", "second": "made"}
    assert "slow" in REG and REG.tags() == ["slow"]

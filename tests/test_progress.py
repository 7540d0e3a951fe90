"""The progress bar of long runs (refsnn/progress.py): what it writes to a log and to a terminal."""

from __future__ import annotations

import io

from refsnn.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_gets_one_line_per_tenth():
    stream = io.StringIO()
    bar = Progress(40, label="run", unit="points", stream=stream)
    for _ in range(40):
        bar.update(1, "loss 0.5")
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 11                                  # the first update (tenth 0), then tenths 1..10
    assert "\r" not in stream.getvalue()
    assert lines[-1].startswith("run [" + "#" * 20 + "] 40/40 points, ")
    assert lines[-1].endswith("loss 0.5") and "left" not in lines[-1]
    assert lines[0].startswith("run [" + "." * 20 + "] 1/40 points, ")
    assert lines[2].startswith("run [####" + "." * 16 + "] 8/40 points, ")
    assert "left" in lines[0]                                # an estimate once some work is done


def test_terminal_redraws_in_place_and_close_ends_the_line():
    stream = Terminal()
    bar = Progress(3, label="epoch 1/1", stream=stream)
    for _ in range(3):
        bar.update(1)
    text = stream.getvalue()
    assert text.startswith("\r") and "\n" not in text        # the last step is drawn, the line left open
    assert "3/3" in text
    bar.close()
    assert stream.getvalue().endswith("\n") and stream.getvalue().count("\n") == 1
    bar.close()                                              # a second close writes nothing more
    assert stream.getvalue().count("\n") == 1


def test_in_place_can_be_forced_either_way():
    forced = io.StringIO()
    bar = Progress(2, stream=forced, in_place=True)
    bar.update(2)
    assert forced.getvalue().startswith("\r")
    log = Terminal()
    bar = Progress(2, stream=log, in_place=False)
    bar.update(2)
    assert log.getvalue().endswith("\n") and "\r" not in log.getvalue()


def test_quiet_when_disabled_empty_or_before_the_delay():
    for bar in (Progress(5, stream=io.StringIO(), enabled=False),
                Progress(0, stream=io.StringIO()),
                Progress(5, stream=io.StringIO(), delay=3600.0)):
        for _ in range(5):
            bar.update()
        bar.close()
        assert bar.stream.getvalue() == ""
        assert bar.done == 5                                 # counted all the same


def test_resumed_work_is_not_in_the_rate():
    stream = io.StringIO()
    bar = Progress(10, done=9, stream=stream)                # 9 points read back from disk
    assert "left" not in bar.line()                          # nothing computed yet: no estimate
    assert "9/10" in bar.line()
    bar.update()
    assert "10/10" in stream.getvalue() and "left" not in stream.getvalue()

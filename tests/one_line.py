"""The shape of every user-mistake message: one line, no traceback."""


def assert_one_line_error(capsys, message):
    """A user mistake: one stderr line starting with "error: " that holds `message`, and no traceback."""
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err

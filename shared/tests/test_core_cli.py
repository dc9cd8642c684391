import pytest

from trainforge_core.cli import main


def test_list_and_info(toy_registered, capsys):
    assert main(["list"]) == 0
    assert "toy-method" in capsys.readouterr().out
    assert main(["info", "toy-method"]) == 0
    out = capsys.readouterr().out
    assert "A Toy Paper" in out and "2401.00001" in out


def test_demo_prints_table_and_saves(toy_registered, capsys, tmp_path):
    assert main(["demo", "toy-method", "--quick", "--out", str(tmp_path / "d"), "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("trainforge demo toy-method") and "held-out loss" in out
    assert (tmp_path / "d" / "report.json").exists()


def test_unknown_slug_is_one_line_error(toy_registered, capsys):
    assert main(["demo", "toy-metod"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trainforge: error: unknown technique 'toy-metod'")
    assert "Did you mean: toy-method" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [["demo", "toy-method", "--seed", "-3"], ["demo", "toy-method", "--seed", "x"], ["bogus"], []],
)
def test_bad_arguments_exit_2(toy_registered, argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_output_dir_that_is_a_file(toy_registered, tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("")
    with pytest.raises(SystemExit) as exc:
        main(["demo", "toy-method", "--out", str(target)])
    assert exc.value.code == 2
    assert "is not a directory" in capsys.readouterr().err


def test_doctor_reports_backends_and_packages(toy_registered, capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "tokenizers" in out and "toy-method" in out

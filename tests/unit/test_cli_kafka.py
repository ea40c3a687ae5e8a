import pytest

from streamlearn.cli import main


@pytest.mark.parametrize("command", ["worker", "produce"])
def test_help_explains_the_kafka_commands(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--bootstrap-servers" in out and "--config" in out
    assert "dead_letter_topic" in out and "checkpoint" in out


def test_produce_rejects_stream_and_file_together(capsys):
    with pytest.raises(SystemExit):
        main(["produce", "--stream", "sea-drift", "--file", "x.jsonl"])
    assert "not allowed with" in capsys.readouterr().err


def test_bad_config_is_an_error_naming_the_key(tmp_path, capsys):
    config = tmp_path / "w.yaml"
    config.write_text("kafka: {max_poll_records: 0}\n")
    assert main(["worker", "--config", str(config)]) == 2
    assert "kafka.max_poll_records" in capsys.readouterr().err

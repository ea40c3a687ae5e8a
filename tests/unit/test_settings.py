import pydantic
import pytest

from streamlearn.errors import ConfigError, StreamlearnError
from streamlearn.settings import LearnerSettings, Settings, load_settings


def write(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_file_or_env():
    s = load_settings()
    assert isinstance(s, Settings)
    assert s.learner == LearnerSettings()
    assert s.drift.detector == "loss_deviation"


def test_yaml_values_are_read(tmp_path):
    path = write(
        tmp_path,
        "learner:\n  lr: 0.05\n  hidden: [8, 4]\ndrift:\n  detector: adwin\n"
        "  params: {delta: 0.01}\nsource:\n  kind: file\n  path: /tmp/events.jsonl\n",
    )
    s = load_settings(path)
    assert s.learner.lr == 0.05
    assert s.learner.hidden == (8, 4)
    assert s.drift.detector == "adwin"
    assert s.drift.params == {"delta": 0.01}
    assert str(s.source.path) == "/tmp/events.jsonl"
    # untouched keys keep their defaults
    assert s.learner.seed == LearnerSettings().seed


def test_kernel_native_is_read_as_compiled(tmp_path, monkeypatch):
    """``native``, the value's name in earlier releases, stays valid in users' files and env."""
    assert (
        load_settings(write(tmp_path, "learner: {kernel: native}\n")).learner.kernel == "compiled"
    )
    with pytest.raises(ConfigError, match=r"learner\.kernel"):
        load_settings(write(tmp_path, "learner: {kernel: fortran}\n"))
    monkeypatch.setenv("STREAMLEARN_LEARNER__KERNEL", "native")  # the environment, likewise
    assert load_settings().learner.kernel == "compiled"


def test_str_path_accepted(tmp_path):
    path = write(tmp_path, "learner: {lr: 0.5}\n")
    assert load_settings(str(path)).learner.lr == 0.5


def test_env_nested_key(monkeypatch):
    monkeypatch.setenv("STREAMLEARN_LEARNER__LR", "0.125")
    monkeypatch.setenv("STREAMLEARN_LEARNER__HIDDEN", "[16, 8]")
    monkeypatch.setenv("STREAMLEARN_DRIFT__DETECTOR", "kswin")
    s = load_settings()
    assert s.learner.lr == 0.125
    assert s.learner.hidden == (16, 8)
    assert s.drift.detector == "kswin"


def test_env_wins_over_yaml_and_merges_with_it(tmp_path, monkeypatch):
    path = write(tmp_path, "learner:\n  lr: 0.1\n  seed: 7\n")
    monkeypatch.setenv("STREAMLEARN_LEARNER__LR", "0.5")
    s = load_settings(path)
    assert s.learner.lr == 0.5  # env over YAML
    assert s.learner.seed == 7  # the rest of the YAML section survives


def test_keyword_overrides_merge_into_yaml_section(tmp_path):
    path = write(tmp_path, "learner:\n  lr: 0.1\n  seed: 7\n")
    s = load_settings(path, learner={"seed": 3})
    assert s.learner.lr == 0.1
    assert s.learner.seed == 3


def test_settings_are_frozen():
    s = load_settings()
    with pytest.raises(pydantic.ValidationError):
        s.learner.lr = 1.0
    with pytest.raises(pydantic.ValidationError):
        s.learner = LearnerSettings()
    assert s.learner.lr == LearnerSettings().lr


@pytest.mark.parametrize(
    ("section", "values", "key"),
    [
        ("learner", {"lr": -1.0}, "learner.lr"),
        ("learner", {"lr": "fast"}, "learner.lr"),
        ("learner", {"task": "ranking"}, "learner.task"),
        ("drift", {"window": 3}, "drift.window"),
        ("features", {"hash_buckets": 4}, "features.hash_buckets"),
        ("source", {"batch_size": 0}, "source.batch_size"),
    ],
)
def test_wrong_value_names_the_dotted_key(section, values, key):
    with pytest.raises(ConfigError) as info:
        load_settings(**{section: values})
    assert key in str(info.value)


def test_wrong_value_from_yaml_names_the_key(tmp_path):
    path = write(tmp_path, "learner:\n  lr: -3\n")
    with pytest.raises(ConfigError, match=r"learner\.lr"):
        load_settings(path)


def test_wrong_value_from_env_names_the_key(monkeypatch):
    monkeypatch.setenv("STREAMLEARN_LEARNER__LR", "not-a-number")
    with pytest.raises(ConfigError, match=r"learner\.lr"):
        load_settings()


def test_config_error_is_a_streamlearn_error_and_hides_pydantic():
    with pytest.raises(StreamlearnError) as info:
        load_settings(learner={"lr": 0})
    assert info.value.__cause__ is None  # raised "from None"
    assert info.value.__suppress_context__


def test_unknown_key_in_section_rejected():
    with pytest.raises(ConfigError, match=r"learner\.learning_rate"):
        load_settings(learner={"learning_rate": 0.1})


def test_unknown_section_rejected(tmp_path):
    path = write(tmp_path, "lerner:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match="lerner"):
        load_settings(path)


def test_cross_field_validation():
    with pytest.raises(ConfigError, match="source"):
        load_settings(source={"kind": "file"})
    with pytest.raises(ConfigError, match="exactly two classes"):
        load_settings(learner={"task": "binary", "classes": ["a", "b", "c"]})
    with pytest.raises(ConfigError, match="max_classes"):
        load_settings(learner={"task": "multiclass", "classes": [1, 2, 3], "max_classes": 2})


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "absent.yaml")


def test_directory_is_unreadable(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path)


def test_invalid_yaml(tmp_path):
    path = write(tmp_path, "learner: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(path)


def test_yaml_top_level_must_be_mapping(tmp_path):
    path = write(tmp_path, "- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(path)


def test_empty_yaml_is_defaults(tmp_path):
    path = write(tmp_path, "")
    assert load_settings(path) == load_settings()


def test_keyword_overrides_win_over_env(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("learner:\n  lr: 0.5\n  hidden: [8]\n")
    monkeypatch.setenv("STREAMLEARN_LEARNER__LR", "0.25")
    monkeypatch.setenv("STREAMLEARN_LEARNER__SEED", "7")
    s = load_settings(cfg, learner={"lr": 0.125})
    assert s.learner.lr == 0.125  # command-line style override beats env and YAML
    assert s.learner.seed == 7  # env still applies where no override is given
    assert s.learner.hidden == (8,)  # YAML still applies below both


def test_invalid_override_names_the_key():
    with pytest.raises(ConfigError, match=r"learner\.lr"):
        load_settings(learner={"lr": -1})


# -- lists from the environment, one-line errors (issue 19) ------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1:9092,broker-2:9093",
        " 127.0.0.1:9092 , broker-2:9093, ",
        '["127.0.0.1:9092", "broker-2:9093"]',
    ],
)
def test_bootstrap_servers_from_env_comma_separated_or_json(monkeypatch, text):
    monkeypatch.setenv("STREAMLEARN_KAFKA__BOOTSTRAP_SERVERS", text)
    assert load_settings().kafka.bootstrap_servers == ("127.0.0.1:9092", "broker-2:9093")


def test_a_single_bootstrap_server_from_env(monkeypatch):
    monkeypatch.setenv("STREAMLEARN_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    assert load_settings().kafka.bootstrap_servers == ("127.0.0.1:9092",)


def test_other_lists_from_env_and_text_in_yaml(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMLEARN_LEARNER__HIDDEN", "32, 16")
    monkeypatch.setenv("STREAMLEARN_FEATURES__NUMERIC", "amount,age")
    s = load_settings(write(tmp_path, "features: {categorical: 'color, shape'}\n"))
    assert s.learner.hidden == (32, 16)
    assert s.features.numeric == ("amount", "age")
    assert s.features.categorical == ("color", "shape")
    assert load_settings(kafka={"bootstrap_servers": "a:1,b:2"}).kafka.bootstrap_servers == (
        "a:1",
        "b:2",
    )


@pytest.mark.parametrize(
    ("name", "text", "key"),
    [
        ("STREAMLEARN_KAFKA__BOOTSTRAP_SERVERS", '["a:1", ', "kafka.bootstrap_servers"),
        ("STREAMLEARN_KAFKA__BOOTSTRAP_SERVERS", " , ", "kafka.bootstrap_servers"),
        ("STREAMLEARN_LEARNER__HIDDEN", "32,wide", "learner.hidden"),
        ("STREAMLEARN_DRIFT__PARAMS", "delta=0.01", "drift.params"),  # a mapping: JSON only
        ("STREAMLEARN_LEARNER__CLASSES", "a,b", "learner.classes"),  # typed items: JSON only
    ],
)
def test_invalid_env_value_is_one_line_naming_key_and_variable(monkeypatch, name, text, key):
    monkeypatch.setenv(name, text)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "\n" not in message
    assert key in message and name in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_several_errors_on_one_line():
    with pytest.raises(ConfigError) as info:
        load_settings(learner={"lr": -1}, kafka={"max_poll_records": 0})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("invalid settings: ")
    assert message.count("; ") >= 1
    assert "learner.lr (STREAMLEARN_LEARNER__LR)" in message
    assert "kafka.max_poll_records (STREAMLEARN_KAFKA__MAX_POLL_RECORDS)" in message


def test_errors_do_not_show_secret_values():
    with pytest.raises(ConfigError) as info:  # a section-level error: its input holds secrets
        load_settings(kafka={"security_protocol": "SASL_SSL", "sasl_password": "hunter2"})
    assert "hunter2" not in str(info.value) and "sasl_mechanism" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_settings(serve={"admin_token": ["hunter2"]})
    assert "hunter2" not in str(info.value) and "serve.admin_token" in str(info.value)


def test_invalid_yaml_is_one_line_with_the_position(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, "learner:\n  lr: [0.1\n"))
    message = str(info.value)
    assert "\n" not in message and "line 3" in message and "--config" in message

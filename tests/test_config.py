"""Configuration: overlays, environment overrides, and errors that name the file and the key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from core.config import REPO_ROOT, ConfigError, load_config


@pytest.fixture()
def conf_copy(tmp_path, monkeypatch) -> Path:
    """A writable copy of conf/, used instead of the real one."""
    folder = tmp_path / "conf"
    shutil.copytree(REPO_ROOT / "conf", folder)
    monkeypatch.setenv("CRM_CONF_DIR", str(folder))
    return folder


def test_demo_is_the_default_environment_and_paths_are_absolute():
    settings = load_config(environ={})
    assert settings.env == "demo"
    assert settings.data_dir == (REPO_ROOT / "data").resolve()
    assert settings.shop.url == f"sqlite:///{settings.data_dir}/shop.sqlite"
    assert settings.spark.jars_dir == f"{REPO_ROOT}/.cache/ivy"


def test_test_overlay_overrides_base_and_keeps_the_rest():
    settings = load_config(environ={"CRM_ENV": "test"})
    assert settings.env == "test"
    assert settings.spark.shuffle_partitions == 2
    assert settings.spark.extra["spark.ui.enabled"] == "false"  # the overlay's dict, merged over base's empty one
    assert settings.spark.packages[0].startswith("io.delta:delta-spark_")


def test_short_environment_variables_set_urls_and_data_dir(tmp_path):
    settings = load_config(
        environ={
            "CRM_SHOP_URL": "postgresql+psycopg2://reader:secret@db:5432/shop",
            "CRM_DB_URL": "postgresql+psycopg2://writer:secret@db:5432/crm",
            "CRM_DATA_DIR": str(tmp_path),
        }
    )
    assert settings.shop.url.endswith("@db:5432/shop")
    assert settings.crm.db_url.endswith("@db:5432/crm")
    assert settings.data_dir == tmp_path
    assert settings.airflow.home == f"{tmp_path}/airflow"


def test_any_key_can_be_overridden_with_its_type_checked():
    settings = load_config(environ={"CRM__SPARK__SHUFFLE_PARTITIONS": "16", "CRM__SPARK__DRIVER_MEMORY": "6g"})
    assert settings.spark.shuffle_partitions == 16
    assert settings.spark.driver_memory == "6g"
    with pytest.raises(ConfigError, match=r"CRM__SPARK__SHUFFLE_PARTITIONS: spark.shuffle_partitions: .*integer"):
        load_config(environ={"CRM__SPARK__SHUFFLE_PARTITIONS": "many"})


def test_unknown_key_names_the_file_and_suggests_the_right_one(conf_copy):
    (conf_copy / "test.yaml").write_text("spark:\n  driver_memroy: 2g\n")
    with pytest.raises(ConfigError) as error:
        load_config(environ={"CRM_ENV": "test"})
    message = str(error.value)
    assert "conf/test.yaml" in message or str(conf_copy / "test.yaml") in message
    assert "unknown key 'spark.driver_memroy'" in message
    assert "did you mean 'driver_memory'" in message


def test_wrong_type_names_the_file_and_the_key(conf_copy):
    (conf_copy / "test.yaml").write_text("generator:\n  customers: lots\n")
    with pytest.raises(ConfigError, match=r"test.yaml: generator.customers: .*valid integer.*'lots'"):
        load_config(environ={"CRM_ENV": "test"})


def test_unknown_environment_variable_key_is_an_error():
    with pytest.raises(ConfigError, match=r"CRM__SPARK__MASTR: unknown key 'spark.mastr' \(did you mean 'master'\?\)"):
        load_config(environ={"CRM__SPARK__MASTR": "local[1]"})


def test_unknown_environment_is_refused():
    with pytest.raises(ConfigError, match=r"CRM_ENV: unknown environment 'staging'"):
        load_config(environ={"CRM_ENV": "staging"})


def test_invalid_yaml_names_the_file(conf_copy):
    (conf_copy / "test.yaml").write_text("spark: [unclosed\n")
    with pytest.raises(ConfigError, match=r"test.yaml: not valid YAML"):
        load_config(environ={"CRM_ENV": "test"})


def test_the_repository_holds_no_password():
    for path in (REPO_ROOT / "conf").rglob("*"):
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.lstrip().startswith("#"):
                    continue
                assert "password" not in line.lower() and ":secret@" not in line, f"{path}: {line}"


def test_personal_data_is_exported_only_with_a_policy_for_each_column():
    import json

    profile = {"CRM__EXPORT__DATASETS": json.dumps(["customer_segments", "customer_profile"])}
    with pytest.raises(
        ConfigError,
        match=r"export\.pii\.customer_profile: customer_profile is exported with "
        r"personal data in first_name, last_name, phone, address_line1; "
        r"expected a policy for each .*\{first_name: drop,",
    ):
        load_config(environ={**profile, "CRM__EXPORT__PII": json.dumps({"customer_profile": {"email": "sha256"}})})
    decided = {"email": "plain", "first_name": "plain", "last_name": "drop", "phone": "drop", "address_line1": "drop"}
    settings = load_config(environ={**profile, "CRM__EXPORT__PII": json.dumps({"customer_profile": decided})})
    assert settings.export.pii["customer_profile"] == decided


def test_crm_config_masks_the_spark_connect_token():
    """`spark.remote` carries the server's bearer token: `crm config` shows where, never the token."""
    from conftest import run_crm

    shown = run_crm("config", env={"CRM__SPARK__REMOTE": "sc://localhost:15002/;token=s3cret-token"}).stdout
    assert "sc://localhost:15002/;token=***" in shown
    assert "s3cret-token" not in shown


def test_a_shape_setting_outside_its_choices_names_the_key_and_the_choices():
    with pytest.raises(ConfigError, match=r"CRM__RFM__MONETARY_VALUE: rfm.monetary_value: .*'net' or 'gross'"):
        load_config(environ={"CRM__RFM__MONETARY_VALUE": "both"})
    with pytest.raises(ConfigError, match=r"campaigns.consent_when_missing: .*'unknown', 'granted' or 'denied'"):
        load_config(environ={"CRM__CAMPAIGNS__CONSENT_WHEN_MISSING": "yes"})


def test_code_generation_takes_yamls_bare_on_and_off_and_names_its_choices():
    assert load_config(environ={"CRM__SPARK__CODE_GENERATION": "off"}).spark.code_generation == "off"  # YAML reads off as false
    assert load_config(environ={"CRM__SPARK__CODE_GENERATION": "on"}).spark.code_generation == "on"
    assert load_config(environ={}).spark.code_generation == "auto"
    with pytest.raises(ConfigError, match=r"CRM__SPARK__CODE_GENERATION: spark.code_generation: .*'auto', 'on' or 'off'"):
        load_config(environ={"CRM__SPARK__CODE_GENERATION": "sometimes"})

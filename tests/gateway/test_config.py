"""Gateway settings: every missing or invalid one is named with where to set it, and the token never shows."""

import subprocess
import sys
from pathlib import Path

import pytest

from saas.gateway.config import ConfigError, load_config
from tests.gateway.conftest import ROOT, clean_environment, run_gateway

TOKEN = "rr_secret_token_value"


def _problems(**kwargs) -> list[str]:
    with pytest.raises(ConfigError) as refused:
        load_config(**kwargs)
    return refused.value.problems


def test_serve_refuses_to_start_naming_every_missing_setting(tmp_path):
    # given no settings at all
    env = clean_environment()
    # when serve is started
    result = run_gateway("serve", env=env)
    # then it exits 2 naming each missing setting and the variable that sets it, and listens on nothing
    assert result.returncode == 2
    assert "refusing to start `serve`" in result.stderr
    for line in (
        "platform_url: not set; set READROOM_GATEWAY_PLATFORM_URL",
        "tenant_slug: not set; set READROOM_GATEWAY_TENANT_SLUG",
        "api_token: not set; set READROOM_GATEWAY_API_TOKEN or READROOM_GATEWAY_API_TOKEN_FILE",
        "spool_dir: not set; set READROOM_GATEWAY_SPOOL_DIR",
    ):
        assert line in result.stderr
    assert result.stdout == ""


def test_invalid_values_are_named_with_the_file_they_came_from(tmp_path):
    # given a config file with a bad port, scheme, slug and backoff
    config = tmp_path / "gateway.toml"
    config.write_text(
        'listen_port = 70000\nplatform_url = "ftp://readroom.example"\ntenant_slug = "a/b"\n'
        'spool_dir = "spool"\nretry_backoff_base = 10\nretry_backoff_max = 5\nmax_batch_sise = 3\n'
    )
    # when it is loaded
    problems = _problems(config_path=config, environ={"READROOM_GATEWAY_API_TOKEN": TOKEN})
    # then each problem names the setting, the reason and the file
    text = "\n".join(problems)
    assert f"listen_port: must be an integer from 1 to 65535, got 70000 (from listen_port in {config})" in text
    assert "platform_url: must be an http:// or https:// URL" in text
    assert "tenant_slug: must be the clinic's slug" in text
    assert "retry_backoff_max: must be at least retry_backoff_base (10.0), got 5.0" in text
    assert f"max_batch_sise: unknown setting in {config}" in text


def test_a_token_in_the_config_file_is_refused_without_echoing_it(tmp_path):
    # given a token pasted into the config file
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'platform_url = "https://readroom.example"\ntenant_slug = "clinic"\nspool_dir = "s"\napi_token = "{TOKEN}"\n'
    )
    # when serve starts with it, then it refuses, points at the safe places, and never prints the secret
    result = run_gateway("serve", "--config", str(config), env=clean_environment())
    assert result.returncode == 2
    assert "api_token: do not put the token in" in result.stderr
    assert "api_token_file" in result.stderr and "READROOM_GATEWAY_API_TOKEN" in result.stderr
    assert TOKEN not in result.stderr + result.stdout


def test_the_environment_overrides_the_file_and_relative_paths_follow_the_file(tmp_path):
    # given a config file in its own folder, with a relative spool and token file
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "token").write_text(TOKEN + "\n")
    config = folder / "gateway.toml"
    config.write_text(
        'platform_url = "https://readroom.example/"\ntenant_slug = "clinic-a"\nspool_dir = "spool"\n'
        'api_token_file = "token"\nlisten_port = 4000\nmax_batch_instances = 10\ntls_verify = true\n'
    )
    # when the environment sets the port and turns verification off
    settings = load_config(
        config_path=config,
        environ={"READROOM_GATEWAY_LISTEN_PORT": "4242", "READROOM_GATEWAY_TLS_VERIFY": "false"},
    )
    # then the environment wins, paths resolve beside the file, and the URL loses its trailing slash
    assert settings.listen_port == 4242 and settings.tls_verify is False and settings.requests_verify is False
    assert settings.spool_dir == folder / "spool" and settings.api_token_file == folder / "token"
    assert settings.stow_url == "https://readroom.example/dicomweb/clinic-a/studies"
    assert settings.max_batch_instances == 10 and settings.listen_host == "127.0.0.1"
    assert settings.current_token() == TOKEN


def test_the_token_never_appears_in_the_settings_repr_and_a_rotated_file_is_read_again(tmp_path):
    # given a token file
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    settings = load_config(
        config_path=None,
        environ={
            "READROOM_GATEWAY_PLATFORM_URL": "https://readroom.example",
            "READROOM_GATEWAY_TENANT_SLUG": "clinic",
            "READROOM_GATEWAY_SPOOL_DIR": str(tmp_path / "spool"),
            "READROOM_GATEWAY_API_TOKEN_FILE": str(token_file),
        },
    )
    # then the repr hides it
    assert TOKEN not in repr(settings)
    # when the file is replaced by a new token, then the next request uses the new one
    token_file.write_text("rr_rotated_token")
    assert settings.current_token() == "rr_rotated_token"
    # and while the file is briefly missing mid-rotation, the last good token stands
    token_file.unlink()
    assert settings.current_token() == TOKEN


def test_token_sources_and_tls_settings_must_not_contradict_each_other(tmp_path):
    base = {
        "READROOM_GATEWAY_PLATFORM_URL": "https://readroom.example",
        "READROOM_GATEWAY_TENANT_SLUG": "clinic",
        "READROOM_GATEWAY_SPOOL_DIR": str(tmp_path),
    }
    token_file = tmp_path / "token"
    token_file.write_text("")
    empty_file = _problems(config_path=None, environ={**base, "READROOM_GATEWAY_API_TOKEN_FILE": str(token_file)})
    assert empty_file == [f"api_token_file: {token_file} must hold exactly one token on one line"]
    both = _problems(
        config_path=None,
        environ={**base, "READROOM_GATEWAY_API_TOKEN_FILE": str(token_file), "READROOM_GATEWAY_API_TOKEN": TOKEN},
    )
    assert any("set either READROOM_GATEWAY_API_TOKEN or api_token_file, not both" in p for p in both)
    tls = _problems(
        config_path=None,
        environ={
            **base,
            "READROOM_GATEWAY_API_TOKEN": TOKEN,
            "READROOM_GATEWAY_TLS_VERIFY": "no",
            "READROOM_GATEWAY_CA_BUNDLE": str(tmp_path / "missing.pem"),
        },
    )
    assert "ca_bundle: is set but tls_verify is false; drop one of them" in tls
    assert f"ca_bundle: {tmp_path / 'missing.pem'} is not a readable file" in tls
    assert all(TOKEN not in problem for problem in both + tls)


def test_a_ca_bundle_is_what_requests_verifies_against(tmp_path):
    bundle = tmp_path / "clinic-ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = load_config(
        config_path=None,
        environ={"READROOM_GATEWAY_CA_BUNDLE": str(bundle), "READROOM_GATEWAY_SPOOL_DIR": str(tmp_path)},
        command="status",
    )
    assert settings.tls_verify is True and settings.requests_verify == str(bundle)


def test_status_needs_only_the_spool_and_echo_needs_no_spool(tmp_path):
    assert load_config(
        config_path=None, environ={"READROOM_GATEWAY_SPOOL_DIR": str(tmp_path)}, command="status"
    ).spool_dir == Path(tmp_path)
    echo = load_config(
        config_path=None,
        environ={
            "READROOM_GATEWAY_PLATFORM_URL": "http://127.0.0.1:8000",
            "READROOM_GATEWAY_TENANT_SLUG": "clinic",
            "READROOM_GATEWAY_API_TOKEN": TOKEN,
        },
        command="echo",
    )
    assert echo.spool_dir is None and echo.me_url == "http://127.0.0.1:8000/api/v1/me/"


def test_the_gateway_imports_no_django_at_run_time():
    # the import-linter contract checks the source; this checks what a clinic machine actually loads
    code = (
        "import sys, saas.gateway.__main__;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'rest_framework', 'tenants')"
        " or m.startswith(('saas.config', 'saas.studies', 'saas.accounts', 'saas.audit', 'saas.portal')));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_example_config_file_loads_as_shipped(tmp_path):
    example = ROOT / "saas" / "gateway" / "gateway.example.toml"
    copy = tmp_path / "gateway.toml"
    copy.write_text(example.read_text())
    (tmp_path / "token").write_text(TOKEN)
    settings = load_config(config_path=copy, environ={})
    assert settings.stow_url == "https://readroom.example/dicomweb/my-clinic/studies"
    assert settings.spool_dir == tmp_path / "spool" and settings.current_token() == TOKEN


def test_files_that_are_not_utf8_are_named_not_a_traceback(tmp_path):
    # given a config file saved in Latin-1 (a clinic name in a comment) and a token file that is not text
    config = tmp_path / "gateway.toml"
    config.write_bytes('# Clínica Norte\nplatform_url = "https://readroom.example"\n'.encode("latin-1"))
    token = tmp_path / "token"
    token.write_bytes(b"\xff\xfe rr_token")
    # when each is loaded, through the command line too
    problems = _problems(config_path=config, environ={})
    token_problems = _problems(config_path=None, environ={"READROOM_GATEWAY_API_TOKEN_FILE": str(token)})
    result = run_gateway("serve", "--config", str(config), env=clean_environment())
    # then the file and the byte are named, and nothing crashed
    assert problems == [f"--config: {config} must be saved as UTF-8 (byte 4 is not UTF-8)"]
    assert f"api_token_file: {token} is not a text file (byte 0 is not UTF-8)" in token_problems
    assert result.returncode == 2 and "Traceback" not in result.stderr and "must be saved as UTF-8" in result.stderr


def test_calling_ae_titles_come_as_a_toml_list_or_a_comma_separated_variable(tmp_path):
    config = tmp_path / "gateway.toml"
    config.write_text('calling_ae_titles = ["CT_ROOM1", "MR_ROOM2"]\nspool_dir = "spool"\n')
    from_file = load_config(config_path=config, environ={}, command="status")
    from_env = load_config(
        config_path=config, environ={"READROOM_GATEWAY_CALLING_AE_TITLES": " US1, CT_ROOM1 ,"}, command="status"
    )
    assert from_file.calling_ae_titles == ("CT_ROOM1", "MR_ROOM2")
    assert from_env.calling_ae_titles == ("US1", "CT_ROOM1")
    problems = _problems(
        config_path=None,
        environ={"READROOM_GATEWAY_CALLING_AE_TITLES": "OK,THIS_TITLE_IS_TOO_LONG", "READROOM_GATEWAY_SPOOL_DIR": "s"},
        command="status",
    )
    assert problems == [
        "calling_ae_titles: each AE title must be 1 to 16 printable ASCII characters without a backslash, "
        "got 'THIS_TITLE_IS_TOO_LONG' (from READROOM_GATEWAY_CALLING_AE_TITLES)"
    ]

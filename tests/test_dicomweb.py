"""The DICOMweb connection's credentials, URL checks and retry policy (no server needed)."""

import json

import pytest
import requests

from deeplesion_tf.data import dicomweb


def test_credentials_come_from_the_environment_or_a_file_and_never_show(tmp_path):
    env = {dicomweb.USER_VARIABLE: "alice", dicomweb.PASSWORD_VARIABLE: "pw-123"}
    found = dicomweb.read_credentials(environ=env)
    assert (found.username, found.password, found.token, found.source) == (
        "alice", "pw-123", None, "environment")
    assert "pw-123" not in repr(found) and "alice" not in repr(found)
    token = dicomweb.read_credentials(environ={**env, dicomweb.TOKEN_VARIABLE: "tok"})
    assert (token.username, token.password, token.token) == (None, None, "tok")
    assert dicomweb.read_credentials(environ={}).source == "none"

    path = tmp_path / "pacs.json"
    path.write_text(json.dumps({"username": "bob", "password": ""}))
    found = dicomweb.read_credentials(str(path), environ=env)  # the file wins
    assert (found.username, found.password, found.source) == ("bob", "", str(path))

    with pytest.raises(ValueError, match="environment: a user needs a password") as error:
        dicomweb.read_credentials(environ={dicomweb.USER_VARIABLE: "alice"})
    assert "alice" not in str(error.value)
    path.write_text('{"password": "secret-9"')  # truncated JSON
    with pytest.raises(ValueError, match="cannot read the credentials") as error:
        dicomweb.read_credentials(str(path))
    assert "secret-9" not in str(error.value)


def test_a_url_with_credentials_or_not_http_is_refused():
    with pytest.raises(ValueError, match="the server URL holds credentials") as error:
        dicomweb.Connection(dicomweb.Settings("https://bob:pw-77@pacs.example.org/dicom-web"))
    assert "pw-77" not in str(error.value)
    with pytest.raises(ValueError, match="not an http"):
        dicomweb.Connection(dicomweb.Settings("ftp://pacs.example.org/"))
    assert dicomweb.public_url("https://pacs.example.org:8443/dw/?key=abc") == \
        "https://pacs.example.org:8443/dw/"


def _http_error(status):
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(response=response)


class _Flaky:
    """Raises the given errors in turn, then returns "done"."""

    def __init__(self, *errors):
        self.errors, self.calls = list(errors), 0

    def __call__(self):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def _connection(max_retries):
    return dicomweb.Connection(dicomweb.Settings("http://127.0.0.1:9/dicom-web",
                                                 max_retries=max_retries, backoff_s=0.0))


def test_retries_fix_dropped_connections_and_busy_servers_only():
    connection = _connection(max_retries=3)
    flaky = _Flaky(requests.ConnectionError(), requests.Timeout(), _http_error(503))
    assert connection.call("a search", flaky) == "done" and flaky.calls == 4

    flaky = _Flaky(*[requests.ConnectionError()] * 5)
    with pytest.raises(dicomweb.ServerError, match=r"http://127.0.0.1:9/dicom-web: a search "
                       r"failed after 4 attempts \(ConnectionError\)"):
        connection.call("a search", flaky)
    assert flaky.calls == 4

    for status, message in ((404, "a search failed: HTTP 404"),
                            (401, "refused a search: HTTP 401 \\(check the credentials")):
        flaky = _Flaky(_http_error(status))
        with pytest.raises(dicomweb.ServerError, match=message) as error:
            connection.call("a search", flaky)
        assert flaky.calls == 1 and error.value.status == status


def test_the_rate_limit_spaces_requests(monkeypatch):
    session = dicomweb._RateLimitedSession(requests_per_second=4)
    slept = []
    monkeypatch.setattr(dicomweb.time, "sleep", slept.append)
    monkeypatch.setattr(requests.Session, "request", lambda self, *a, **k: "sent")
    clock = iter([100.0, 100.0, 100.1])
    monkeypatch.setattr(dicomweb.time, "monotonic", lambda: next(clock))
    assert [session.request("GET", "u") for _ in range(3)] == ["sent"] * 3
    assert slept == pytest.approx([0.25, 0.4])

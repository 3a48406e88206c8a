"""OAuth2 for SMTP: XOAUTH2 against a real aiosmtpd server, msal and Google token endpoints
served locally over real HTTP(S), and `commplan check --smtp` / `commplan auth` end to end."""

from __future__ import annotations

import base64
import datetime as dt
import io
import ipaddress
import json
import ssl
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from commplan_xl.cli import main
from commplan_xl.mail import oauth
from commplan_xl.mail.message import build_message
from commplan_xl.mail.oauth import (
    GoogleTokenProvider,
    MsalTokenProvider,
    explain_login_refusal,
    explain_msal_error,
    provider_for,
    xoauth2_string,
)
from commplan_xl.mail.render import Rendered, text_to_html
from commplan_xl.mail.smtp import SmtpTransport, check_connection
from commplan_xl.problems import SendFailure
from commplan_xl.settings import Settings, parse_settings
from tests.builders import DEFAULT_SETTINGS, make_workbook
from tests.smtp_server import SMTPServer, free_port

MAILBOX = "service@contoso.com"
TENANT = "contoso-tenant"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
SECRET = "the-secret-value"


# ---------------------------------------------------------------- helpers


@dataclass
class FixedTokens:
    """The fake TokenProvider: hands out the given tokens in turn (the last one repeats)."""

    tokens: list[str]
    calls: int = 0

    def token(self) -> str:
        self.calls += 1
        return self.tokens[min(self.calls, len(self.tokens)) - 1]


@dataclass
class FailingTokens:
    """A TokenProvider whose sign-in fails, as msal's would with a revoked secret."""

    sentence: str

    def token(self) -> str:
        raise SendFailure(self.sentence, temporary=True, connection=True)


def oauth_settings(port: int, tmp_path: Path, **kw: object) -> Settings:
    base = Settings(home=tmp_path, sender_email=MAILBOX, smtp_host="127.0.0.1", smtp_port=port,
                    smtp_security="none", smtp_user=MAILBOX, smtp_auth="oauth2-microsoft",
                    smtp_timeout=5.0, oauth_tenant_id=TENANT, oauth_client_id=CLIENT_ID)
    return replace(base, **kw)  # type: ignore[arg-type]


def a_message():  # type: ignore[no-untyped-def]
    text = "Bonjour,\nvotre commande est en cours de traitement."
    rendered = Rendered(subject="Commande", text=text, html=text_to_html(text, title="x"))
    return build_message(rendered=rendered, sender_email=MAILBOX, sender_name="Service",
                         reply_to="", to=["alice@example.test"], attachments=[])


def raw(user: str, token: str) -> str:
    return f"user={user}\x01auth=Bearer {token}\x01\x01"


# ---------------------------------------------------------------- local token endpoints

Route = Callable[[str, str, dict[str, str]], tuple[int, dict]]


class JsonServer:
    """A real HTTP(S) server on 127.0.0.1 answering JSON from `route(method, path, form)`."""

    def __init__(self, route: Route, *, tls: ssl.SSLContext | None = None) -> None:
        class Handler(BaseHTTPRequestHandler):
            def _answer(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                form = dict(urllib.parse.parse_qsl(body))
                status, payload = route(method, urllib.parse.urlsplit(self.path).path, form)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                self._answer("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._answer("POST")

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,),
                                        daemon=True)

    def __enter__(self) -> JsonServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert file, key file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@dataclass
class Entra:
    """Microsoft Entra's answers for one tenant, as msal's client-credentials flow sees them."""

    url: str = ""
    clients: dict[str, str] = field(default_factory=lambda: {CLIENT_ID: SECRET})
    expires_in: int = 3600
    issued: list[str] = field(default_factory=list)

    def route(self, method: str, path: str, form: dict[str, str]) -> tuple[int, dict]:
        tenant, _, rest = path.strip("/").partition("/")
        if tenant != TENANT:
            return 400, {"error": "invalid_tenant", "error_codes": [90002],
                         "error_description": f"AADSTS90002: Tenant '{tenant}' not found."}
        base = f"{self.url}/{TENANT}"
        if method == "GET" and rest == "v2.0/.well-known/openid-configuration":
            return 200, {"issuer": f"{base}/v2.0", "token_endpoint": f"{base}/oauth2/v2.0/token",
                         "authorization_endpoint": f"{base}/oauth2/v2.0/authorize"}
        if method == "POST" and rest == "oauth2/v2.0/token":
            client = form.get("client_id", "")
            if client not in self.clients:
                return 400, {"error": "unauthorized_client", "error_codes": [700016],
                             "error_description": f"AADSTS700016: Application with identifier"
                             f" '{client}' was not found in the directory '{TENANT}'."}
            if form.get("client_secret") != self.clients[client]:
                return 401, {"error": "invalid_client", "error_codes": [7000215],
                             "error_description": "AADSTS7000215: Invalid client secret"
                             " provided."}
            assert form.get("scope") == "https://outlook.office365.com/.default"
            token = f"entra-token-{len(self.issued) + 1}"
            self.issued.append(token)
            return 200, {"token_type": "Bearer", "expires_in": self.expires_in,
                         "access_token": token}
        return 404, {"error": "not_found"}


@pytest.fixture
def entra(tls_files, monkeypatch):
    """A local HTTPS Entra for the tenant TENANT and the app CLIENT_ID."""
    # requests lets these variables override the `verify` msal is given (psf/requests#3829).
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    cert_file, key_file = tls_files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    state = Entra()
    with JsonServer(state.route, tls=context) as server:
        state.url = server.url
        yield state


def msal_provider(entra: Entra, tls_files, **kw: str) -> MsalTokenProvider:
    args = {"tenant_id": TENANT, "client_id": CLIENT_ID, "client_secret": SECRET, **kw}
    return MsalTokenProvider(**args, authority_host=entra.url, verify=str(tls_files[0]),
                             instance_discovery=False, timeout=5.0)


# ---------------------------------------------------------------- the XOAUTH2 string, presets


def test_xoauth2_string_is_base64_of_user_bearer_token():
    """The XOAUTH2 argument is base64 of user=<user>^Aauth=Bearer <token>^A^A."""
    encoded = xoauth2_string(MAILBOX, "abc.def")
    assert base64.b64decode(encoded) == f"user={MAILBOX}\x01auth=Bearer abc.def\x01\x01".encode()


@pytest.mark.parametrize(("auth", "sheet", "env", "expected"), [
    ("oauth2-microsoft", {}, {}, ("smtp.office365.com", 587, "starttls")),
    ("oauth2-google", {}, {}, ("smtp.gmail.com", 587, "starttls")),
    ("oauth2-microsoft", {"smtp_host": "relay.local", "smtp_security": "none"}, {},
     ("relay.local", 25, "none")),
    ("oauth2-microsoft", {"smtp_security": "none"}, {"COMMPLAN_SMTP_HOST": "env.local"},
     ("env.local", 25, "none")),
    ("oauth2-google", {"smtp_port": "465"}, {}, ("smtp.gmail.com", 465, "ssl")),
    ("password", {}, {}, ("localhost", 25, "")),  # no TLS, and none chosen
])
def test_provider_preset_applies_only_when_smtp_host_is_empty(tmp_path, auth, sheet, env,
                                                               expected):
    """An OAuth2 provider fills host, port and security only where sheet and environment are
    silent."""
    ids = {"oauth_tenant_id": (TENANT, 4), "oauth_client_id": (CLIENT_ID, 5)}
    raw_sheet = {"smtp_auth": (auth, 2), **ids} | {k: (v, 3) for k, v in sheet.items()}
    settings, problems = parse_settings(raw_sheet, home=tmp_path, environ=env)
    assert problems == []
    assert (settings.smtp_host, settings.smtp_port, settings.smtp_security) == expected


def test_check_names_missing_microsoft_ids_in_settings(tmp_path):
    """`check` reports oauth2-microsoft without tenant or client id at the smtp_auth row."""
    _settings, problems = parse_settings({"smtp_auth": ("oauth2-microsoft", 7)}, home=tmp_path,
                                         environ={})
    assert [str(p) for p in problems] == [
        "Settings row 7 (value): smtp_auth: oauth2-microsoft needs oauth_tenant_id (from the"
        " app registration)",
        "Settings row 7 (value): smtp_auth: oauth2-microsoft needs oauth_client_id (from the"
        " app registration)",
    ]


# ---------------------------------------------------------------- sentences


@pytest.mark.parametrize(("codes", "words"), [
    ([90002], "oauth_tenant_id"),
    ([700016], "oauth_client_id"),
    ([7000215], "not its Secret ID"),
    ([7000222], "has expired"),
    ([65001], "SMTP.SendAsApp"),
    ([], "check oauth_tenant_id, oauth_client_id and the client secret"),
])
def test_msal_error_codes_become_one_sentence_saying_what_to_fix(codes, words):
    """Each known AADSTS code of Entra gives one sentence naming the setting to fix."""
    result = {"error": "invalid_request", "error_codes": codes,
              "error_description": "AADSTS0: something\nTrace ID: 123"}
    sentence = explain_msal_error(result, tenant_id=TENANT, client_id=CLIENT_ID)
    assert words in sentence
    assert "\n" not in sentence and "Trace ID" not in sentence


@pytest.mark.parametrize(("auth", "reply", "words"), [
    ("oauth2-microsoft", "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is"
     " disabled for the Tenant.", "-SmtpClientAuthenticationDisabled $false"),
    ("password", "535 5.7.139 Authentication unsuccessful, basic authentication is disabled.",
     "set smtp_auth to oauth2-microsoft"),
    ("oauth2-microsoft", "535 5.7.3 Authentication unsuccessful", "Add-MailboxPermission"),
    ("oauth2-google", "535 5.7.8 Username and Password not accepted", "commplan auth google"),
    ("password", "534 5.7.9 Application-specific password required", "app password"),
    ("password", "535 5.7.8 bad credentials", "COMMPLAN_SMTP_PASSWORD"),
])
def test_refused_logins_become_one_sentence_saying_what_to_fix(auth, reply, words):
    """Each provider's refusal of a login names its cause and what the IT person does."""
    sentence = explain_login_refusal(int(reply[:3]), reply, auth=auth, where="h:587",
                                     user=MAILBOX)
    assert words in sentence
    assert sentence.startswith(f'the mail server h:587 refused the login of "{MAILBOX}"')


def test_client_secret_comes_from_environment_then_keyring(tmp_path, memory_keyring):
    """The client secret is read from COMMPLAN_OAUTH_CLIENT_SECRET first, else the keyring
    (service commplan-oauth, user = client id)."""
    settings = oauth_settings(1, tmp_path)
    with pytest.raises(SendFailure) as info:
        provider_for(settings, {})
    assert "COMMPLAN_OAUTH_CLIENT_SECRET" in str(info.value) and "commplan-oauth" in str(info.value)
    assert info.value.temporary and info.value.connection
    memory_keyring.set_password("commplan-oauth", CLIENT_ID, "from-keyring")
    assert oauth.client_secret(CLIENT_ID, {}) == "from-keyring"
    assert oauth.client_secret(CLIENT_ID, {"COMMPLAN_OAUTH_CLIENT_SECRET": "env"}) == "env"
    assert isinstance(provider_for(settings, {}), MsalTokenProvider)


def test_missing_tenant_or_client_id_is_named(tmp_path):
    """oauth2-microsoft without tenant or client id says which Settings key is empty."""
    settings = oauth_settings(1, tmp_path, oauth_tenant_id="", oauth_client_id="")
    with pytest.raises(SendFailure) as info:
        provider_for(settings, {"COMMPLAN_OAUTH_CLIENT_SECRET": "x"})
    assert "oauth_tenant_id and oauth_client_id" in str(info.value)


# ---------------------------------------------------------------- the XOAUTH2 exchange


def test_microsoft_login_sends_the_exact_xoauth2_string_then_the_mail(tmp_path):
    """With oauth2-microsoft the transport logs in by AUTH XOAUTH2 with the provider's token and
    then sends."""
    tokens = FixedTokens(["tok-123"])
    with SMTPServer(xoauth2={MAILBOX: "tok-123"}) as server, \
            SmtpTransport(oauth_settings(server.port, tmp_path), token_provider=tokens) as smtp:
        smtp.send(a_message(), sender=MAILBOX, recipients=["alice@example.test"]).checked()
        server.wait_for(1)
    assert server.handler.xoauth2_seen == [raw(MAILBOX, "tok-123")]
    assert server.handler.logins == [MAILBOX]
    assert [r.rcpt_tos for r in server.received] == [["alice@example.test"]]


def test_empty_smtp_user_logs_in_as_the_sender(tmp_path):
    """With OAuth2 and no smtp_user, the token is presented for sender_email."""
    with SMTPServer(xoauth2={MAILBOX: "t"}) as server:
        settings = oauth_settings(server.port, tmp_path, smtp_user="")
        sentence = check_connection(settings, token_provider=FixedTokens(["t"]))
    assert server.handler.xoauth2_seen == [raw(MAILBOX, "t")]
    assert f'logged in as "{MAILBOX}" with OAuth2' in sentence


@pytest.mark.parametrize(("refusal", "words"), [
    ("535 5.7.3 Authentication unsuccessful", "Add-MailboxPermission"),
    ("535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the"
     " Mailbox.", "Set-CASMailbox"),
])
def test_refused_token_is_a_temporary_connection_failure(tmp_path, refusal, words):
    """A refused XOAUTH2 login is one sentence, recorded temporary so mails retry once fixed,
    and never shows the token."""
    with SMTPServer(xoauth2={MAILBOX: "good"}, refusal=refusal) as server, \
            SmtpTransport(oauth_settings(server.port, tmp_path),
                   token_provider=FixedTokens(["stale-token"])) as transport, \
            pytest.raises(SendFailure) as info:
        transport.send(a_message(), sender=MAILBOX, recipients=["alice@example.test"]).checked()
    failure = info.value
    assert failure.temporary and failure.connection
    assert words in str(failure) and refusal.split(",")[0] in str(failure)
    assert "stale-token" not in str(failure)
    assert server.received == []


def test_gmail_style_challenge_ends_in_a_refusal_not_a_hang(tmp_path):
    """Gmail answers a bad token with a 334 challenge; the transport ends it and reports the
    refusal."""
    with SMTPServer(xoauth2={MAILBOX: "good"}, google_style=True,
                    refusal="535 5.7.8 Username and Password not accepted") as server:
        settings = oauth_settings(server.port, tmp_path, smtp_auth="oauth2-google")
        with pytest.raises(SendFailure) as info:
            check_connection(settings, token_provider=FixedTokens(["bad"]))
    assert "535 5.7.8" in str(info.value) and "commplan auth google" in str(info.value)


def test_server_without_xoauth2_is_named(tmp_path):
    """A server that offers no AUTH XOAUTH2 gives a sentence about the OAuth2 login."""
    with SMTPServer(credentials={"u": "p"}) as server, pytest.raises(SendFailure) as info:
        check_connection(oauth_settings(server.port, tmp_path),
                         token_provider=FixedTokens(["t"]))
    assert "does not offer the OAuth2 login (AUTH XOAUTH2)" in str(info.value)


def test_sign_in_failure_is_reported_before_connecting(tmp_path):
    """When no token can be had, the failure is the provider's sentence and SMTP is not
    touched."""
    with SMTPServer(xoauth2={MAILBOX: "t"}) as server, pytest.raises(SendFailure) as info:
        check_connection(oauth_settings(server.port, tmp_path),
                         token_provider=FailingTokens("the client secret has expired"))
    assert str(info.value) == "the client secret has expired"
    assert info.value.temporary and info.value.connection
    assert server.connections == 0


def test_each_new_connection_asks_the_provider_for_a_token(tmp_path):
    """After the server hangs up, the reconnect logs in with a token asked again (so an
    expired one is renewed)."""
    tokens = FixedTokens(["t1", "t2"])
    with SMTPServer(xoauth2={MAILBOX: "t1"}, drop_at_mail={2}) as server, \
            SmtpTransport(oauth_settings(server.port, tmp_path), token_provider=tokens) as smtp:
        server.handler.tokens[MAILBOX] = "t1"
        smtp.send(a_message(), sender=MAILBOX, recipients=["a@example.test"]).checked()
        server.handler.tokens[MAILBOX] = "t2"  # the first token has expired meanwhile
        smtp.send(a_message(), sender=MAILBOX, recipients=["b@example.test"]).checked()
        server.wait_for(2)
    assert tokens.calls == 2
    assert server.handler.xoauth2_seen == [raw(MAILBOX, "t1"), raw(MAILBOX, "t2")]
    assert len(server.received) == 2


# ---------------------------------------------------------------- msal against a local Entra


def test_msal_token_is_cached_until_it_nears_expiry(entra, tls_files):
    """msal reuses a valid token and asks Entra again once it is within minutes of expiry."""
    provider = msal_provider(entra, tls_files)
    assert provider.token() == provider.token() == "entra-token-1"
    assert entra.issued == ["entra-token-1"]
    entra.expires_in = 60  # msal treats a token expiring within 5 minutes as expired
    short = msal_provider(entra, tls_files)
    assert short.token() == "entra-token-2"
    assert short.token() == "entra-token-3"


def test_msal_token_logs_in_to_the_smtp_server(entra, tls_files, tmp_path):
    """The msal-backed provider's token is what the SMTP server receives in XOAUTH2."""
    with SMTPServer(xoauth2={MAILBOX: "entra-token-1"}) as server:
        sentence = check_connection(oauth_settings(server.port, tmp_path),
                                    token_provider=msal_provider(entra, tls_files))
    assert server.handler.xoauth2_seen == [raw(MAILBOX, "entra-token-1")]
    assert "nothing was sent" in sentence


@pytest.mark.parametrize(("kw", "words"), [
    ({"tenant_id": "fabrikam"}, 'the tenant "fabrikam" does not exist'),
    ({"client_id": "00000000-0000-0000-0000-000000000000"}, "AADSTS700016"),
    ({"client_secret": "the-secret-id"}, "AADSTS7000215"),
])
def test_msal_refusals_are_temporary_sentences(entra, tls_files, kw, words):
    """A wrong tenant, client id or secret is a temporary connection failure naming it."""
    with pytest.raises(SendFailure) as info:
        msal_provider(entra, tls_files, **kw).token()
    assert words in str(info.value)
    assert info.value.temporary and info.value.connection
    assert SECRET not in str(info.value)


def test_msal_unreachable_sign_in_service(tls_files, monkeypatch):
    """When Entra cannot be reached the mails wait with a sentence about the connection."""
    provider = MsalTokenProvider(tenant_id=TENANT, client_id=CLIENT_ID, client_secret=SECRET,
                                 authority_host=f"https://127.0.0.1:{free_port()}",
                                 verify=str(tls_files[0]), instance_discovery=False, timeout=5)
    with pytest.raises(SendFailure) as info:
        provider.token()
    assert "could not reach Microsoft's sign-in service 127.0.0.1" in str(info.value)
    assert info.value.temporary and info.value.connection


# ---------------------------------------------------------------- Google's token file


def google_file(tmp_path: Path, refresh: str = "refresh-1") -> Path:
    path = tmp_path / "google-oauth2.json"
    path.write_text(json.dumps({"email_address": MAILBOX, "google_client_id": "cid",
                                "google_client_secret": "csecret",
                                "google_refresh_token": refresh}), encoding="utf-8")
    return path


@pytest.fixture
def google():
    """A local Google token endpoint that honours the refresh token "refresh-1"."""
    calls: list[dict[str, str]] = []

    def route(method: str, path: str, form: dict[str, str]) -> tuple[int, dict]:
        calls.append(form)
        if form.get("refresh_token") != "refresh-1":
            return 400, {"error": "invalid_grant",
                         "error_description": "Token has been expired or revoked."}
        return 200, {"access_token": f"ya29.{len(calls)}", "expires_in": 3599}

    with JsonServer(route) as server:
        server.calls = calls  # type: ignore[attr-defined]
        yield server


def test_google_token_is_refreshed_from_yagmails_file_and_cached(tmp_path, google):
    """The access token comes from the refresh token in the prepared file, once per hour."""
    provider = GoogleTokenProvider(google_file(tmp_path), token_url=f"{google.url}/token")
    assert provider.token() == provider.token() == "ya29.1"
    assert google.calls == [{"client_id": "cid", "client_secret": "csecret",
                             "refresh_token": "refresh-1", "grant_type": "refresh_token"}]


def test_google_revoked_consent_asks_for_commplan_auth_google(tmp_path, google):
    """An expired or revoked consent says to run `commplan auth google` again."""
    provider = GoogleTokenProvider(google_file(tmp_path, "revoked"),
                                   token_url=f"{google.url}/token")
    with pytest.raises(SendFailure) as info:
        provider.token()
    assert "expired or was revoked" in str(info.value)
    assert "`commplan auth google`" in str(info.value) and info.value.temporary


def test_google_missing_token_file_never_prompts(tmp_path):
    """Without a prepared token file a run fails with a sentence instead of asking questions."""
    settings = Settings(home=tmp_path, smtp_auth="oauth2-google")
    provider = provider_for(settings, {})
    with pytest.raises(SendFailure) as info:
        provider.token()
    assert str(tmp_path / "google-oauth2.json") in str(info.value)
    assert "does not exist: run `commplan auth google`" in str(info.value)


# ---------------------------------------------------------------- the command line


def oauth_workbook(home: Path, port: int) -> None:
    rows = [dict(r) for r in DEFAULT_SETTINGS if r["key"] != "smtp_port"]
    rows += [{"key": "smtp_port", "value": port}, {"key": "smtp_user", "value": MAILBOX},
             {"key": "smtp_auth", "value": "oauth2-microsoft"},
             {"key": "oauth_tenant_id", "value": TENANT},
             {"key": "oauth_client_id", "value": CLIENT_ID},
             # the test server has no TLS: a sign-in in clear only when chosen
             {"key": "smtp_security", "value": "none"}]
    make_workbook(home, settings=rows)


def smtp_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if "serveur de mail" in line
            or "mail server" in line]


@pytest.mark.parametrize(("accepted", "up", "status", "words"), [
    ("tok", True, 0, f"a répondu (sans chiffrement, connecté en tant que « {MAILBOX} » avec "
     "OAuth2) ; rien n'a été envoyé"),
    ("other", True, 1, f"a refusé la connexion de « {MAILBOX} » (535 5.7.3"),
    ("tok", False, 1, "impossible de joindre le serveur de mail 127.0.0.1:"),
])
def test_check_smtp_reports_success_refusal_or_unreachable_in_one_sentence(
        tmp_path, clean_env, monkeypatch, capsys, accepted, up, status, words):
    """`commplan check --smtp` logs in with OAuth2 and sends nothing; its outcome is one
    sentence."""
    monkeypatch.setattr(oauth, "provider_for", lambda settings, environ=None: FixedTokens(["tok"]))
    server = SMTPServer(xoauth2={MAILBOX: accepted})
    oauth_workbook(tmp_path, server.port)
    if up:
        with server:
            code = main(["check", "--smtp", "--home", str(tmp_path)])
        assert server.received == []
    else:
        code = main(["check", "--smtp", "--home", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == status
    lines = smtp_lines(out)
    assert len(lines) == 1 and words in lines[0]
    assert lines[0].count(". ") == 0  # one sentence


def test_auth_google_refuses_to_run_without_a_terminal(tmp_path, clean_env, monkeypatch,
                                                        capsys):
    """The one-time Google consent never runs unattended: without a terminal it stops with a
    sentence."""
    make_workbook(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["auth", "google", "--home", str(tmp_path)]) == 1
    assert "lancez-le dans une fenêtre de terminal" in capsys.readouterr().err
    assert not (tmp_path / "google-oauth2.json").exists()


def test_auth_knows_only_google(capsys, monkeypatch):
    """`commplan auth` takes google as its provider; anything else is a usage error."""
    monkeypatch.setenv("COMMPLAN_LANG", "en")
    assert main(["auth", "microsoft"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_refused_login_fails_the_run_and_the_mail_goes_once_fixed(tmp_path, clean_env,
                                                                   monkeypatch, capsys):
    """A refused OAuth2 login records the due mail as a temporary failure; the next run,
    once the mailbox is fixed, sends it."""
    monkeypatch.setattr(oauth, "provider_for", lambda settings, environ=None: FixedTokens(["tok"]))
    with SMTPServer(xoauth2={MAILBOX: "not-yet"}) as server:
        oauth_workbook(tmp_path, server.port)
        assert main(["run", "--today", "2026-03-07", "--home", str(tmp_path)]) == 1
        assert "Add-MailboxPermission" in capsys.readouterr().out
        assert server.received == []
        server.handler.tokens[MAILBOX] = "tok"  # the administrator fixed the permission
        assert main(["run", "--today", "2026-03-08", "--home", str(tmp_path)]) == 0
        server.wait_for(1)
    assert [r.rcpt_tos for r in server.received] == [["alice@example.test"]]


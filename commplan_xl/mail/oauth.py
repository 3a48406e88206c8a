"""OAuth2 for SMTP: Microsoft 365 (msal, client credentials) and Google (yagmail's token file).

The mailer asks a `TokenProvider` for an access token and sends it with `AUTH XOAUTH2`.
Every failure is a `SendFailure` of kind LOGIN_REFUSED whose sentence says what to fix, so
the mails wait and go out on the first run after it is fixed. Nothing here ever prompts,
except `google_consent`, which only `commplan auth google` calls.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from commplan_xl.i18n import _
from commplan_xl.problems import CommplanError, SendFailure, SendKind
from commplan_xl.settings import Settings

__all__ = [
    "TokenProvider", "MsalTokenProvider", "GoogleTokenProvider",
    "xoauth2_string", "client_secret", "provider_for", "google_token_file",
    "explain_msal_error", "explain_google_error", "explain_login_refusal", "google_consent",
]

MICROSOFT_AUTHORITY_HOST = "https://login.microsoftonline.com"
MICROSOFT_SCOPE = "https://outlook.office365.com/.default"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
SECRET_ENV = "COMMPLAN_OAUTH_CLIENT_SECRET"
KEYRING_SERVICE = "commplan-oauth"
GOOGLE_FILE_DEFAULT = "google-oauth2.json"
GOOGLE_KEYS = ("google_client_id", "google_client_secret", "google_refresh_token")
_EARLY = 120  # seconds: a token this close to expiry is renewed before use


class TokenProvider(Protocol):
    """Gives a valid OAuth2 access token for SMTP (renewed when it has expired)."""

    def token(self) -> str: ...


def _failure(sentence: str) -> SendFailure:
    return SendFailure(sentence, kind=SendKind.LOGIN_REFUSED)


def xoauth2_string(user: str, token: str) -> str:
    """The base64 argument of `AUTH XOAUTH2`: user=<user>^Aauth=Bearer <token>^A^A."""
    raw = f"user={user}\x01auth=Bearer {token}\x01\x01"
    return base64.b64encode(raw.encode("utf-8")).decode("ascii")


def client_secret(client_id: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The app's client secret from COMMPLAN_OAUTH_CLIENT_SECRET, else the keyring; never a
    prompt. In the keyring it is stored under service "commplan-oauth", user = client id."""
    env = os.environ if environ is None else environ
    if env.get(SECRET_ENV, "").strip():
        return env[SECRET_ENV].strip()
    try:
        import keyring

        return keyring.get_password(KEYRING_SERVICE, client_id)
    except Exception:  # no keyring backend on this machine: same as no secret stored
        return None


# ---------------------------------------------------------------- Microsoft 365


def _aadsts_codes(result: Mapping[str, Any]) -> list[int]:
    codes = [int(c) for c in result.get("error_codes") or [] if str(c).isdigit()]
    codes += [int(c) for c in re.findall(r"AADSTS(\d+)", str(result.get("error_description")))]
    return codes


def explain_msal_error(result: Mapping[str, Any], *, tenant_id: str, client_id: str) -> str:
    """One sentence for an error answer of Microsoft Entra (msal's result dict)."""
    codes = _aadsts_codes(result)
    first = str(result.get("error_description") or result.get("error") or _("no detail"))
    detail = first.strip().splitlines()[0] if first.strip() else _("no detail")
    detail = detail if len(detail) <= 160 else detail[:157] + "..."
    head = _("Microsoft 365 refused to give commplan a sign-in token")
    code = codes[0] if codes else ""

    def has(*wanted: int) -> bool:
        return any(c in codes for c in wanted)

    if has(90002, 900023, 90013):
        return _('{head}: the tenant "{tenant}" does not exist (AADSTS{code}); put the '
                 "Directory (tenant) ID of the app registration in oauth_tenant_id in the "
                 "Settings sheet").format(head=head, tenant=tenant_id, code=code)
    if has(700016):
        return _('{head}: no application with client id "{client}" is registered in the '
                 'tenant "{tenant}" (AADSTS700016); check oauth_client_id (the Application '
                 "(client) ID) and oauth_tenant_id in the Settings sheet").format(
                     head=head, client=client_id, tenant=tenant_id)
    if has(7000215, 7000216):
        return _("{head}: the client secret is wrong (AADSTS7000215); put the secret's Value "
                 '(not its Secret ID) in {variable} or in the keyring (service "{service}", '
                 'user "{client}")').format(head=head, variable=SECRET_ENV,
                                            service=KEYRING_SERVICE, client=client_id)
    if has(7000222):
        return _("{head}: the client secret has expired (AADSTS7000222); create a new one in "
                 "the app registration and store it in {variable} or the keyring (service "
                 '"{service}", user "{client}")').format(head=head, variable=SECRET_ENV,
                                                         service=KEYRING_SERVICE,
                                                         client=client_id)
    if has(7000112, 7000113):
        return _("{head}: the application is disabled in the tenant (AADSTS{code}); ask the "
                 "Microsoft 365 administrator to enable it").format(head=head, code=code)
    if has(500011, 65001, 650057, 501051, 1002012):
        return _("{head}: the app has no granted permission to send mail through Exchange "
                 "Online (AADSTS{code}); add the application permission SMTP.SendAsApp of "
                 "Office 365 Exchange Online and grant admin consent").format(head=head,
                                                                              code=code)
    return _("{head} ({detail}); check oauth_tenant_id, oauth_client_id and the client "
             "secret").format(head=head, detail=detail)


class MsalTokenProvider:
    """Client-credentials tokens from Microsoft Entra through msal.

    msal keeps the token in its in-memory cache and asks for a new one when it is about to
    expire, so `token()` may be called before every login.
    """

    def __init__(
        self,
        *,
        tenant_id: str,
        client_id: str,
        client_secret: str,
        authority_host: str = MICROSOFT_AUTHORITY_HOST,
        timeout: float = 30.0,
        verify: bool | str = True,
        instance_discovery: bool | None = None,
    ) -> None:
        self.tenant_id = tenant_id.strip()
        self.client_id = client_id.strip()
        self._secret = client_secret
        self._authority = f"{authority_host.rstrip('/')}/{urllib.parse.quote(self.tenant_id)}"
        self._host = urllib.parse.urlsplit(authority_host).hostname or authority_host
        self._options: dict[str, Any] = {"timeout": timeout, "verify": verify}
        if instance_discovery is not None:
            self._options["instance_discovery"] = instance_discovery
        self._app: Any = None
        self._lock = threading.Lock()

    def _unreachable(self, exc: BaseException) -> SendFailure:
        why = " ".join(str(exc).split())[:160] or type(exc).__name__
        return _failure(_("could not reach Microsoft's sign-in service {host} ({why}): check "
                          "the internet connection and any proxy; the mails wait").format(
                              host=self._host, why=why))

    def _application(self) -> Any:
        if self._app is None:
            import msal

            try:
                self._app = msal.ConfidentialClientApplication(
                    self.client_id, client_credential=self._secret, authority=self._authority,
                    **self._options)
            except ValueError as exc:
                # msal checks the tenant when it starts: an unknown one ends here.
                text = str(exc)
                if "tenant" in text.lower() or "authority" in text.lower():
                    raise _failure(
                        "Microsoft 365 refused to give commplan a sign-in token: the tenant"
                        f' "{self.tenant_id}" does not exist; put the Directory (tenant) ID of'
                        " the app registration in oauth_tenant_id in the Settings sheet"
                    ) from None
                raise
            except OSError as exc:  # requests' errors are OSErrors
                raise self._unreachable(exc) from None
        return self._app

    def token(self) -> str:
        with self._lock:
            app = self._application()
            try:
                result = app.acquire_token_for_client(scopes=[MICROSOFT_SCOPE])
            except OSError as exc:
                raise self._unreachable(exc) from None
        if result and result.get("access_token"):
            return str(result["access_token"])
        raise _failure(explain_msal_error(result or {}, tenant_id=self.tenant_id,
                                          client_id=self.client_id))


# ---------------------------------------------------------------- Google


def google_token_file(settings: Settings) -> Path:
    """Where the Google token file is: oauth2_file (relative to the home folder), or
    google-oauth2.json in the home folder."""
    text = os.path.expanduser(settings.oauth2_file.strip() or GOOGLE_FILE_DEFAULT)
    path = Path(text)
    return path if path.is_absolute() else settings.home / path


def _error_payload(exc: urllib.error.HTTPError) -> dict:
    """The JSON object of an error reply from Google's token service (any other body: its
    HTTP status only)."""
    try:
        payload = json.loads(exc.read().decode("utf-8"))
    except ValueError:
        payload = None
    return payload if isinstance(payload, dict) else {"error_description": f"HTTP {exc.code}"}


def explain_google_error(payload: Mapping[str, Any], *, path: Path) -> str:
    """One sentence for an error answer of Google's token endpoint."""
    error = str(payload.get("error") or "")
    detail = str(payload.get("error_description") or error or _("no detail"))
    head = _("Google refused to give commplan a sign-in token")
    if error == "invalid_grant":
        return _("{head}: the consent has expired or was revoked ({detail}); run `commplan "
                 "auth google` once on this computer to give it again (an OAuth app left in "
                 "Testing loses consent after 7 days: publish it, or make it Internal)").format(
                     head=head, detail=detail)
    if error in ("invalid_client", "unauthorized_client", "deleted_client"):
        return _("{head}: the OAuth client in {path} is wrong or was deleted ({detail}); run "
                 "`commplan auth google` with the client id and secret of a Desktop app").format(
                     head=head, path=path, detail=detail)
    return _("{head} ({detail}); run `commplan auth google` again if it persists").format(
        head=head, detail=detail)


def _read_google_file(path: Path) -> dict[str, str]:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        info = None
    except (OSError, ValueError):
        info = {}
    if info is None or not isinstance(info, dict) or not all(info.get(k) for k in GOOGLE_KEYS):
        state = _("does not exist") if info is None else _("is incomplete")
        raise _failure(_(
            "the Google token file {path} {state}: run `commplan auth google` once on this "
            "computer to give consent (never during a scheduled run)").format(path=path,
                                                                              state=state))
    return {k: str(v) for k, v in info.items() if isinstance(v, str)}


class GoogleTokenProvider:
    """Access tokens refreshed from the refresh token in yagmail's oauth2 file.

    The refresh is done here, not by yagmail, because yagmail's request has no timeout
    (a scheduled run must never hang); the file is the one yagmail writes.
    """

    def __init__(self, path: Path, *, token_url: str = GOOGLE_TOKEN_URL,
                 timeout: float = 30.0) -> None:
        self.path = Path(path)
        self._url = token_url
        self._timeout = timeout
        self._token = ""
        self._expires = 0.0

    def token(self) -> str:
        if self._token and time.time() < self._expires - _EARLY:
            return self._token
        info = _read_google_file(self.path)
        body = urllib.parse.urlencode({
            "client_id": info["google_client_id"],
            "client_secret": info["google_client_secret"],
            "refresh_token": info["google_refresh_token"],
            "grant_type": "refresh_token",
        }).encode()
        host = urllib.parse.urlsplit(self._url).hostname
        try:
            with urllib.request.urlopen(self._url, body, timeout=self._timeout) as resp:
                payload = json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            raise _failure(explain_google_error(_error_payload(exc), path=self.path)) from None
        except (OSError, ValueError) as exc:
            why = " ".join(str(getattr(exc, "reason", exc)).split())[:160]
            raise _failure(_("could not reach Google's sign-in service {host} ({why}): check "
                             "the internet connection and any proxy; the mails wait").format(
                                 host=host, why=why)) from None
        token = payload.get("access_token") if isinstance(payload, dict) else None
        if not token:
            raise _failure(explain_google_error(payload if isinstance(payload, dict) else {},
                                                path=self.path))
        self._token = str(token)
        self._expires = time.time() + float(payload.get("expires_in") or 3600)
        return self._token


# ---------------------------------------------------------------- choosing, explaining


def provider_for(settings: Settings, environ: Mapping[str, str] | None = None) -> TokenProvider:
    """The token provider for settings.smtp_auth, or a SendFailure naming what is missing."""
    s = settings
    if s.smtp_auth == "oauth2-google":
        return GoogleTokenProvider(google_token_file(s), timeout=s.smtp_timeout)
    if s.smtp_auth != "oauth2-microsoft":
        raise ValueError(f"smtp_auth {s.smtp_auth!r} uses no token")
    missing = [k for k in ("oauth_tenant_id", "oauth_client_id") if not getattr(s, k).strip()]
    if missing:
        raise _failure(_(
            "smtp_auth oauth2-microsoft needs {keys} in the Settings sheet (the Directory "
            "(tenant) ID and Application (client) ID of the app registration)").format(
                keys=_(" and ").join(missing)))
    secret = client_secret(s.oauth_client_id.strip(), environ)
    if not secret:
        raise _failure(_(
            "there is no client secret for the app {client}: set the environment variable "
            '{variable}, or store it in the system keyring (service "{service}", user '
            '"{client}")').format(client=s.oauth_client_id.strip(), variable=SECRET_ENV,
                                  service=KEYRING_SERVICE))
    return MsalTokenProvider(tenant_id=s.oauth_tenant_id, client_id=s.oauth_client_id,
                             client_secret=secret, timeout=s.smtp_timeout)


def explain_login_refusal(code: int, reply: str, *, auth: str, where: str, user: str) -> str:
    """One sentence for a refused SMTP login, with what to do for the provider's reply."""
    head = _('the mail server {where} refused the login of "{user}" ({reply})').format(
        where=where, user=user, reply=reply)
    low = reply.lower()
    if "5.7.139" in reply and "basic authentication" in low:
        advice = _("Microsoft 365 no longer accepts passwords for this mailbox; set smtp_auth "
                   "to oauth2-microsoft (README: Microsoft 365 and Google Workspace)")
    elif "5.7.139" in reply and "smtpclientauthentication" in low.replace(" ", ""):
        advice = _("SMTP AUTH is disabled for this mailbox or the whole tenant; the Microsoft "
                   "365 administrator must enable it (Set-CASMailbox -Identity {user} "
                   "-SmtpClientAuthenticationDisabled $false)").format(user=user)
    elif "5.7.139" in reply:
        advice = _("Microsoft 365 blocks this sign-in (security defaults, a conditional access "
                   "policy or a locked account); ask the Microsoft 365 administrator")
    elif auth == "oauth2-microsoft":
        advice = _("the token was valid but the app may not send as this mailbox; in Exchange "
                   "Online register the app's service principal (New-ServicePrincipal) and "
                   "give it access to the mailbox (Add-MailboxPermission), grant admin consent "
                   "to SMTP.SendAsApp, and check that smtp_user is the mailbox address")
    elif auth == "oauth2-google":
        advice = _("Gmail did not accept the token for this address; smtp_user must be the "
                   "account that gave consent, with the scope https://mail.google.com/ (run "
                   "`commplan auth google` again)")
    elif "5.7.9" in reply or "application-specific password" in low:
        advice = _("Gmail needs an app password (with 2-step verification) instead of the "
                   "account password, or set smtp_auth to oauth2-google")
    elif "5.7.3" in reply:
        advice = _("check the password (COMMPLAN_SMTP_PASSWORD or the keyring) and smtp_user; "
                   "Microsoft 365 mailboxes may need smtp_auth oauth2-microsoft")
    else:
        advice = _("check the password (COMMPLAN_SMTP_PASSWORD or the keyring) and smtp_user")
    return _("{head}: {advice}").format(head=head, advice=advice)


# ---------------------------------------------------------------- one-time Google consent


def _write_private(path: Path, data: dict[str, str]) -> None:
    """Write the token file atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
        with contextlib.suppress(OSError):
            os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def google_consent(
    path: Path,
    *,
    email: str,
    ask: Callable[[str], str] = input,
    ask_secret: Callable[[str], str] | None = None,
    say: Callable[[str], None] = print,
) -> Path:
    """Ask once for Google consent (yagmail's flow) and write yagmail's token file at `path`.

    The client id and secret come from the existing file when it has them (a consent given
    again after it was revoked), else from the person at the keyboard.
    """
    from yagmail.oauth2 import get_authorization

    if ask_secret is None:
        import getpass

        ask_secret = getpass.getpass
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = {}
    old = old.get("installed", old) if isinstance(old, dict) else {}  # Google's download
    client_id = str(old.get("google_client_id") or old.get("client_id") or "").strip()
    secret = str(old.get("google_client_secret") or old.get("client_secret") or "").strip()
    if not client_id or not secret:
        say(_("Create an OAuth client of type Desktop app in the Google Cloud console (APIs & "
              "Services > Credentials) and enter its id and secret."))
        client_id = client_id or ask(_("Client id: ")).strip()
        secret = secret or ask_secret(_("Client secret: ")).strip()
    if not client_id or not secret:
        raise CommplanError(_("Consent not given: a client id and a client secret are "
                              "needed."))
    say(_("Open the address below, sign in as {email} and allow access; the browser then goes "
          "to a page on localhost that does not load: copy that page's address.").format(
              email=email))
    try:
        # yagmail prints the consent address, then asks for the address it led to.
        refresh, _access, _expires = get_authorization(client_id, secret)
    except (KeyError, IndexError, ValueError):
        raise CommplanError(_("Consent not given: the address pasted has no code in it; run "
                              "`commplan auth google` again.")) from None
    except urllib.error.HTTPError as exc:
        raise CommplanError(explain_google_error(_error_payload(exc), path=path) + ".") from None
    except OSError as exc:
        raise CommplanError(_("Could not reach Google's sign-in service ({error}).").format(
            error=exc)) from None
    _write_private(path, {"email_address": email, "google_client_id": client_id,
                          "google_client_secret": secret, "google_refresh_token": refresh})
    return path

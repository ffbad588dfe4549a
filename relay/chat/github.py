"""Readable summaries of GitHub webhook deliveries (push, pull_request, issues, release).

Pure: `summary(event, body)` decodes the delivery's JSON into the few fields it uses (unknown
fields are ignored, as GitHub adds them all the time) and returns the message text, or None
for an event it does not summarise. Raises BadRequest("malformed_json") for a body that is not
JSON and BadRequest("invalid_field") for one that lacks what the event must have.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec

from relay.chat.commands import MAX_CONTENT_CHARS
from relay.errors import BadRequest

T = TypeVar("T")
EVENTS = ("push", "pull_request", "issues", "release")
MAX_COMMITS = 5  # listed in a push summary; the rest are counted
MAX_TITLE = 200  # characters of a title or commit message's first line


class _Loose(msgspec.Struct, frozen=True):
    pass


class Account(_Loose, frozen=True):
    login: str = "someone"


class Repository(_Loose, frozen=True):
    full_name: str
    html_url: str = ""


class CommitAuthor(_Loose, frozen=True):
    name: str = ""
    username: str | None = None


class Commit(_Loose, frozen=True):
    id: str
    message: str = ""
    author: CommitAuthor = CommitAuthor()


class Push(_Loose, frozen=True):
    ref: str
    repository: Repository
    commits: list[Commit] = []
    compare: str = ""
    forced: bool = False
    deleted: bool = False
    created: bool = False
    sender: Account = Account()


class PullRequest(_Loose, frozen=True):
    number: int
    title: str
    html_url: str = ""
    merged: bool | None = None
    user: Account = Account()


class PullRequestEvent(_Loose, frozen=True):
    action: str
    pull_request: PullRequest
    repository: Repository
    sender: Account = Account()


class Issue(_Loose, frozen=True):
    number: int
    title: str
    html_url: str = ""


class IssuesEvent(_Loose, frozen=True):
    action: str
    issue: Issue
    repository: Repository
    sender: Account = Account()


class Release(_Loose, frozen=True):
    tag_name: str
    name: str | None = None
    html_url: str = ""


class ReleaseEvent(_Loose, frozen=True):
    action: str
    release: Release
    repository: Repository
    sender: Account = Account()


def _decode(body: bytes, kind: type[T]) -> T:
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as e:
        raise BadRequest(
            f"not a GitHub delivery of this event: {e}", code="invalid_field", fields={"$": str(e)}
        ) from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as e:
        raise BadRequest(f"the body is not valid JSON: {e}", code="malformed_json") from None


def _line(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= MAX_TITLE else first[: MAX_TITLE - 1] + "…"


def _fit(text: str) -> str:
    return text if len(text) <= MAX_CONTENT_CHARS else text[: MAX_CONTENT_CHARS - 1] + "…"


def _push(p: Push) -> str:
    repo = p.repository.full_name
    branch = p.ref.removeprefix("refs/heads/").removeprefix("refs/tags/")
    who = p.sender.login
    if p.deleted:
        return f"[{repo}] {who} deleted {branch}"
    count = len(p.commits)
    if count == 0:
        return f"[{repo}] {who} pushed to {branch}" + (f"\n{p.compare}" if p.compare else "")
    forced = " (forced)" if p.forced else ""
    noun = "commit" if count == 1 else "commits"
    lines = [f"[{repo}] {who} pushed {count} {noun} to {branch}{forced}"]
    for commit in p.commits[:MAX_COMMITS]:
        author = commit.author.username or commit.author.name or "unknown"
        lines.append(f"`{commit.id[:7]}` {_line(commit.message)} - {author}")
    if count > MAX_COMMITS:
        lines.append(f"… and {count - MAX_COMMITS} more")
    if p.compare:
        lines.append(p.compare)
    return "\n".join(lines)


def _pull_request(e: PullRequestEvent) -> str:
    pr = e.pull_request
    action = "merged" if e.action == "closed" and pr.merged else e.action.replace("_", " ")
    head = f"[{e.repository.full_name}] {e.sender.login} {action} pull request #{pr.number}"
    return f"{head}: {_line(pr.title)}" + (f"\n{pr.html_url}" if pr.html_url else "")


def _issues(e: IssuesEvent) -> str:
    issue = e.issue
    action = e.action.replace("_", " ")
    head = f"[{e.repository.full_name}] {e.sender.login} {action} issue #{issue.number}"
    return f"{head}: {_line(issue.title)}" + (f"\n{issue.html_url}" if issue.html_url else "")


def _release(e: ReleaseEvent) -> str:
    r = e.release
    title = _line(r.name) if r.name else r.tag_name
    head = f"[{e.repository.full_name}] {e.sender.login} {e.action.replace('_', ' ')} release"
    return f"{head} {title}" + (f"\n{r.html_url}" if r.html_url else "")


def summary(event: str, body: bytes) -> str | None:
    """The message for a delivery of `event` (the X-GitHub-Event header), or None for an event
    that is not summarised. Raises BadRequest as the module says."""
    match event:
        case "push":
            text = _push(_decode(body, Push))
        case "pull_request":
            text = _pull_request(_decode(body, PullRequestEvent))
        case "issues":
            text = _issues(_decode(body, IssuesEvent))
        case "release":
            text = _release(_decode(body, ReleaseEvent))
        case _:
            _decode(body, dict)  # still JSON, or 400 like the others
            return None
    return _fit(text)

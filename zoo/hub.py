"""The Hugging Face Hub: the zoo's folders (LoRA adapters, pipeline folders) pulled and pushed by repo id.

Pull: `resolve_folder("user/name@revision")` is a local path. A local folder of that name wins (as in transformers);
otherwise `huggingface_hub.snapshot_download` fetches the repo with the usual cache, `HF_HUB_OFFLINE`, `HF_TOKEN` and
`revision` behaviour, restricted to `ALLOW_PATTERNS`: configuration JSON, safetensors weights, the model card and
its images. A pickle (`*.bin`, `*.ckpt`, `*.pt`) or code (`*.py`) in the repo is never downloaded, and the loaders
read only the files they name, so one already in the cache is never read either. What is pulled then meets the same
strict checks as a local folder (the base's fingerprint, missing and unexpected keys).

Push: `push_folder` creates the repo (`HfApi.create_repo`, `exist_ok`) and uploads the folder's allowed files in one
commit (`HfApi.upload_folder`), optionally to a branch; `dry_run` only lists them.
"""

from __future__ import annotations

import re
from pathlib import Path

# What the zoo reads from a folder: configs, weights, the model card, its sample images (and a recipe copy).
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.md", "*.yaml", "*.png", "*.jpg", "*.jpeg", "*.webp"]

# user/name, each part letters, digits, "-", "_" or "."; an optional @revision (branch, tag or commit).
_REPO_SPEC = re.compile(r"^(?P<repo>[\w][\w.-]*/[\w][\w.-]*)(?:@(?P<revision>[\w./-]+))?$")


def parse_repo_spec(spec: str) -> tuple[str, str | None] | None:
    """`user/name` or `user/name@revision` → (repo id, revision or None); anything else → None."""
    match = _REPO_SPEC.match(spec)
    if match is None or spec.startswith((".", "/", "~")):
        return None
    return match["repo"], match["revision"]


def resolve_folder(spec: str, what: str = "folder") -> Path:
    """A local folder, or the snapshot of a Hub repo (`user/name[@revision]`) in the Hub cache.

    Args:
        spec: a path, or a repo id with an optional `@revision`.
        what: how error messages name the value (e.g. "--adapter").

    Raises:
        ValueError: one line naming `spec`, when it is neither a folder nor a repo the Hub (or its cache) can provide.
    """
    local = Path(spec).expanduser()
    if local.is_dir():
        return local
    parsed = parse_repo_spec(spec)
    if parsed is None:
        raise ValueError(f"{what} {spec!r}: no such folder, and not a Hub repo id (user/name or user/name@revision)")
    repo_id, revision = parsed
    from huggingface_hub import snapshot_download  # deferred: only a pull needs it
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        path = Path(snapshot_download(repo_id, revision=revision, allow_patterns=ALLOW_PATTERNS))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"{what} {spec!r}: no such folder, and the Hub repo could not be fetched ({reason}); check the repo id, "
            "the revision, HF_TOKEN for a private repo, or HF_HUB_OFFLINE with an empty cache"
        ) from error
    if not any(path.iterdir()):
        raise ValueError(f"{what} {spec!r}: the Hub repo holds none of the files the zoo reads ({ALLOW_PATTERNS})")
    return path


def files_to_push(folder: str | Path) -> list[str]:
    """The folder's files that a push uploads (relative paths, sorted): those matching `ALLOW_PATTERNS`."""
    from huggingface_hub.utils import filter_repo_objects

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder; push an exported adapter or pipeline folder")
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return list(filter_repo_objects(names, allow_patterns=ALLOW_PATTERNS))


def push_folder(
    folder: str | Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = "Upload with zoo",
    dry_run: bool = False,
) -> str | list[str]:
    """Uploads an exported folder to the Hub repo `repo_id` in one commit; returns the commit URL.

    Args:
        folder: an exported adapter or pipeline folder (its README.md is the model card the Hub renders).
        repo_id: `user/name`; created if missing (private when `private`).
        revision: a branch to commit to (created from main if missing); default main.
        dry_run: list the files that would go up and upload nothing.
    """
    files = files_to_push(folder)
    if parse_repo_spec(repo_id) is None or "@" in repo_id:
        raise ValueError(f"repo id {repo_id!r}: expected user/name (the branch goes in --revision)")
    if not files:
        raise ValueError(f"{folder}: no file the zoo shares ({ALLOW_PATTERNS}); export the folder first")
    if dry_run:
        return files
    from huggingface_hub import HfApi

    api = HfApi()
    url = api.create_repo(repo_id, private=private, exist_ok=True)
    if revision is not None:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    commit = api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        revision=revision,
        allow_patterns=ALLOW_PATTERNS,
        commit_message=commit_message,
    )
    return getattr(commit, "commit_url", None) or str(url)

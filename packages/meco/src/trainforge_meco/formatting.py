"""MeCo's data format: ``[BOS] + metadata + document + [EOS]``, metadata labels masked.

The reference (``princeton-pli/MeCo:datatools/mds_pack_data.py``) tokenises the metadata
string ``"URL: <host>\\n\\n"`` on its own, without BOS/EOS, and concatenates
``[bos] + meta_ids + doc_ids + [eos]`` where ``doc_ids`` were tokenised without BOS/EOS.
Its loss mask is 0 on the first ``1 + len(meta_ids)`` positions and 1 elsewhere; ``data.py``
turns masked positions into label -100. Hugging Face causal LMs shift the labels, so the
first document token *is* trained, predicted from BOS and the metadata.

Everything here is tokenizer-agnostic: a Hugging Face tokenizer, a ``tokenizers.Tokenizer``
or any ``encode(text) -> list[int]`` callable with explicit ``bos_id`` / ``eos_id`` works.
"""

from __future__ import annotations

import hashlib
import logging
import re
import warnings
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
"""The label value that the loss ignores (transformers' and torch's -100)."""
UrlMode = Literal["host", "domain", "suffix", "hash", "fixed"]
URL_MODES: tuple[str, ...] = ("host", "domain", "suffix", "hash", "fixed")
"""How a document's URL becomes its metadata prefix (``url_mode``)."""
PromptMode = Literal["ids", "text"]

# princeton-pli/MeCo:datatools/mds_pack_data.py (--use_short_url): drop "http(s)://", keep the
# text before the first "/", as written (no lower-casing, port and trailing dot kept).
_SCHEME = re.compile(r"^https?://", flags=re.IGNORECASE)
# A host name: labels of letters, digits, "-" and "_" joined by dots, an optional ":port".
_HOST = re.compile(
    r"^(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*"
    r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?(?::\d{1,5})?$"
)
DOMAINS_EXTRA = "pip install 'trainforge-meco[domains]'"
_EXTRACTOR: Any = None


def url_host(url: str) -> str:
    """The host of ``url`` as MeCo's ``use_short_url`` writes it.

    ``"https://en.wikipedia.org/wiki/X"`` -> ``"en.wikipedia.org"`` (subdomains kept). As in
    the reference, the host is kept as written: its case, a ``:port`` and a trailing dot stay.
    A URL without a scheme is read the same way (``"en.wikipedia.org/wiki"``); ``"://"`` later
    in the path is fine (``web.archive.org/web/2020/https://example.com``).

    Where this differs from the reference (``re.sub(r"https?://", "", url).split("/")[0]``),
    on purpose: ``user:password@`` is dropped (credentials never go into training text), a
    ``?query`` or ``#fragment`` right after the host is cut, an upper-case ``HTTP://`` is
    removed like a lower-case one, and a URL with no valid host raises.

    Raises:
        TypeError: ``url`` is not a string.
        ValueError: the URL is empty, has whitespace, another scheme, or no valid host.
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a string, got {type(url).__name__}: {url!r}")
    text = url.strip()
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"url must be a non-empty URL without whitespace, got {url!r}")
    rest = _SCHEME.sub("", text)
    # Another scheme only where a scheme can stand: "://" later in the path is valid
    # (web.archive.org/web/2020/https://example.com).
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", rest):
        raise ValueError(f"url must use http(s):// or no scheme, got {url!r}")
    host = rest.split("/")[0].split("?")[0].split("#")[0]
    if "@" in host:  # user:password@host
        host = host.rsplit("@", 1)[1]
    if not host or not _HOST.match(host):
        raise ValueError(
            f"url {url!r} has no valid host (got {host!r}); expected e.g. 'https://example.com/page'"
        )
    return host


def _extract(host: str) -> Any:
    """``tldextract``'s split of ``host`` on its bundled Public Suffix List snapshot (ICANN
    section, as ``tldextract.extract``'s default), never fetching a newer list."""
    global _EXTRACTOR
    if _EXTRACTOR is None:
        try:
            import tldextract
        except ImportError as err:
            raise ImportError(
                "url_mode 'domain' and 'suffix' need the Public Suffix List from tldextract, "
                f"as the reference uses: {DOMAINS_EXTRA}"
            ) from err
        # suffix_list_urls=() and no cache: the snapshot shipped inside tldextract, offline.
        _EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    return _EXTRACTOR(host)


def url_to_metadata(
    url: str,
    mode: UrlMode = "host",
    *,
    fixed_url: str | None = None,
    allowed_hosts: Collection[str] | None = None,
    hash_length: int = 16,
) -> str:
    """The metadata string MeCo conditions on, from a document's URL.

    Modes (``princeton-pli/MeCo:datatools/mds_pack_data.py`` flags in brackets):

    - ``"host"`` [``--use_short_url``]: ``"en.wikipedia.org"``; the paper's default.
    - ``"domain"`` [``--use_url_domain``]: ``f"{domain}.{suffix}"`` from the Public Suffix
      List (``tldextract``, the ``[domains]`` extra), ``"wikipedia.org"``, ``"bbc.co.uk"``;
      as in the reference, a host without a public suffix keeps a trailing dot
      (``"localhost."``, ``"192.168.0.1."``).
    - ``"suffix"`` [``--use_url_suffix``]: the public suffix, ``"org"``, ``"co.uk"`` (empty for
      an IP address, as in the reference).
    - ``"hash"`` [``--use_uuid``, hashed-URL ablation]: the first ``hash_length`` hex digits of
      SHA-256 of the host: an identifier with no semantic content.
    - ``"fixed"`` [``--use_fixed_url``]: ``fixed_url`` for every document (ablation).

    ``allowed_hosts`` [``--use_url_filtering``]: applied, as in the reference, to the value
    the mode produced (hosts in ``host`` / ``hash`` / ``fixed`` mode, registered domains in
    ``domain`` mode, suffixes in ``suffix`` mode; before hashing); others become
    ``"unknown"``.
    """
    if mode not in URL_MODES:
        raise ValueError(f"mode must be one of {URL_MODES}, got {mode!r}")
    if not isinstance(hash_length, int) or not 4 <= hash_length <= 64:
        raise ValueError(f"hash_length must be an integer in [4, 64], got {hash_length!r}")
    if allowed_hosts is not None and (
        isinstance(allowed_hosts, str) or not isinstance(allowed_hosts, Collection)
    ):
        raise TypeError(
            f"allowed_hosts must be a collection of strings, got {type(allowed_hosts).__name__}"
        )
    if mode == "fixed":
        if not isinstance(fixed_url, str) or not fixed_url.strip():
            raise ValueError(f"mode='fixed' needs a non-empty fixed_url, got {fixed_url!r}")
        value = fixed_url
    else:
        value = url_host(url)
        if mode in ("domain", "suffix"):
            ext = _extract(value)
            value = f"{ext.domain}.{ext.suffix}" if mode == "domain" else ext.suffix
    if allowed_hosts is not None and value not in allowed_hosts:
        return "unknown"
    if mode == "hash":
        return hashlib.sha256(value.encode()).hexdigest()[:hash_length]
    return value


class MeCoExample(NamedTuple):
    """One formatted document: 1-D int64 ``input_ids`` and ``labels`` (-100 = no loss)."""

    input_ids: torch.Tensor
    labels: torch.Tensor


@dataclass(frozen=True)
class SpecialIds:
    """The ids the formatter uses at a document's start and end, and where they came from."""

    bos: int
    eos: int
    bos_source: str
    eos_source: str


def _as_id_list(ids: Any, name: str) -> list[int]:
    if isinstance(ids, torch.Tensor):
        if ids.dim() != 1 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise TypeError(
                f"{name} must be a 1-D integer tensor, got {ids.dtype} {tuple(ids.shape)}"
            )
        return [int(i) for i in ids.tolist()]
    if hasattr(ids, "tolist") and hasattr(ids, "ndim"):  # numpy
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise TypeError(f"{name} must be a 1-D integer array, got {ids.dtype} {ids.shape}")
        return [int(i) for i in ids.tolist()]
    if isinstance(ids, str | bytes) or not isinstance(ids, Sequence):
        raise TypeError(f"{name} must be a sequence of token ids, got {type(ids).__name__}")
    out = []
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, int):
            raise TypeError(f"{name} must contain integers, got {i!r}")
        out.append(int(i))
    return out


def _resolve_encode(tokenizer: Any) -> Callable[[str], list[int]]:
    if tokenizer is None:
        raise TypeError(
            "tokenizer must be a tokenizer or an encode(text) -> ids callable, got None"
        )
    # transformers PreTrainedTokenizer(Fast): encode(text, add_special_tokens=False)
    if hasattr(tokenizer, "encode") and hasattr(tokenizer, "convert_tokens_to_ids"):
        return lambda text: list(tokenizer.encode(text, add_special_tokens=False))
    # tokenizers.Tokenizer: encode(text, add_special_tokens=False).ids
    if hasattr(tokenizer, "encode") and hasattr(tokenizer, "token_to_id"):
        return lambda text: list(tokenizer.encode(text, add_special_tokens=False).ids)
    if callable(tokenizer):
        return lambda text: _as_id_list(tokenizer(text), "tokenizer(text)")
    raise TypeError(
        "tokenizer must be a transformers tokenizer, a tokenizers.Tokenizer or a callable "
        f"encode(text) -> list[int], got {type(tokenizer).__name__}"
    )


def _special_from_tokenizer(tokenizer: Any, kind: str) -> int | None:
    value = getattr(tokenizer, f"{kind}_token_id", None)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if hasattr(tokenizer, "token_to_id"):  # tokenizers.Tokenizer: look for common spellings
        for token in (
            f"<|{kind}|>",
            f"<{kind}>",
            "<s>" if kind == "bos" else "</s>",
            "<|begin_of_text|>" if kind == "bos" else "<|end_of_text|>",
            "<|endoftext|>",
        ):
            found = tokenizer.token_to_id(token)
            if found is not None:
                return int(found)
    return None


def resolve_special_ids(
    tokenizer: Any, bos_id: int | None = None, eos_id: int | None = None
) -> SpecialIds:
    """BOS / EOS ids: explicit arguments first, then the tokenizer's.

    A tokenizer with only one of the two (GPT-2 has only ``<|endoftext|>``) uses that token
    for both ends of a document, as GPT-2-style pre-training does, and warns. A tokenizer with
    neither is an error: pass ``bos_id`` / ``eos_id``.
    """
    for name, value in (("bos_id", bos_id), ("eos_id", eos_id)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 0
        ):
            raise ValueError(f"{name} must be a non-negative integer or None, got {value!r}")
    bos = bos_id if bos_id is not None else _special_from_tokenizer(tokenizer, "bos")
    eos = eos_id if eos_id is not None else _special_from_tokenizer(tokenizer, "eos")
    bos_src = "argument" if bos_id is not None else "tokenizer"
    eos_src = "argument" if eos_id is not None else "tokenizer"
    if bos is None and eos is None:
        raise ValueError(
            "the tokenizer has neither a BOS nor an EOS token; pass bos_id= and eos_id= "
            "(MeCo needs a document-start token before the metadata and an end token after it)"
        )
    if bos is None:
        assert eos is not None
        warnings.warn(
            f"tokenizer has no BOS token; using the EOS id {eos} at document starts "
            "(GPT-2 convention)",
            UserWarning,
            stacklevel=3,
        )
        bos, bos_src = eos, "eos"
    if eos is None:
        warnings.warn(
            f"tokenizer has no EOS token; using the BOS id {bos} at document ends",
            UserWarning,
            stacklevel=3,
        )
        eos, eos_src = bos, "bos"
    return SpecialIds(int(bos), int(eos), bos_src, eos_src)


class MeCoFormatter:
    """Format documents for MeCo (metadata phase) or plainly (baseline and cooldown).

    ``fmt(doc_ids, url)`` returns ``(input_ids, labels)`` for
    ``[BOS] + encode(prefix + metadata + suffix) + doc_ids + [EOS]`` with labels -100 on
    exactly the first ``1 + len(meta_ids)`` positions (``princeton-pli/MeCo:data.py``);
    ``fmt(doc_ids)`` (no url) gives ``[BOS] + doc_ids + [EOS]`` with only BOS masked (its
    label is never a target under the causal shift anyway).

    Args:
        tokenizer: a transformers tokenizer, a ``tokenizers.Tokenizer`` or an
            ``encode(text) -> list[int]`` callable (then pass ``bos_id`` and ``eos_id``).
        prefix, suffix: around the metadata; defaults ``"URL: "`` and ``"\\n\\n"`` from the
            reference README packing command (``--add_metadata_prefix`` / ``_suffix``).
        url_mode, fixed_url, allowed_hosts: see :func:`url_to_metadata`.
        bos_id, eos_id: override the tokenizer's special ids (see :func:`resolve_special_ids`).
    """

    def __init__(
        self,
        tokenizer: Any,
        prefix: str = "URL: ",
        suffix: str = "\n\n",
        url_mode: UrlMode = "host",
        *,
        fixed_url: str | None = None,
        allowed_hosts: Collection[str] | None = None,
        bos_id: int | None = None,
        eos_id: int | None = None,
    ) -> None:
        if not isinstance(prefix, str) or not isinstance(suffix, str):
            raise TypeError(f"prefix and suffix must be strings, got {prefix!r} and {suffix!r}")
        if url_mode not in URL_MODES:
            raise ValueError(f"url_mode must be one of {URL_MODES}, got {url_mode!r}")
        if url_mode == "fixed" and (not isinstance(fixed_url, str) or not fixed_url.strip()):
            raise ValueError(f"url_mode='fixed' needs a non-empty fixed_url, got {fixed_url!r}")
        self._encode = _resolve_encode(tokenizer)
        self.special = resolve_special_ids(tokenizer, bos_id, eos_id)
        self.prefix, self.suffix = prefix, suffix
        self.url_mode: UrlMode = url_mode
        self.fixed_url = fixed_url
        self.allowed_hosts = None if allowed_hosts is None else frozenset(allowed_hosts)
        self._meta_cache: dict[str, list[int]] = {}

    @property
    def bos_id(self) -> int:
        return self.special.bos

    @property
    def eos_id(self) -> int:
        return self.special.eos

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a string, got {type(text).__name__}")
        return self._encode(text)

    def metadata(self, url: str) -> str:
        """The metadata value for ``url`` under this formatter's URL mode (e.g. the host)."""
        return url_to_metadata(
            url, self.url_mode, fixed_url=self.fixed_url, allowed_hosts=self.allowed_hosts
        )

    def metadata_text(self, url: str | None = None, *, metadata: str | None = None) -> str:
        """``prefix + metadata + suffix``, from a URL or from a metadata string given as is
        (the reference's ``--add_metadata`` path for non-URL metadata)."""
        if (url is None) == (metadata is None):
            raise ValueError("give exactly one of url= and metadata=")
        if metadata is not None:
            if not isinstance(metadata, str) or not metadata.strip():
                raise ValueError(f"metadata must be a non-empty string, got {metadata!r}")
            value = metadata
        else:
            value = self.metadata(url)  # type: ignore[arg-type]
        return f"{self.prefix}{value}{self.suffix}"

    def metadata_ids(self, url: str | None = None, *, metadata: str | None = None) -> list[int]:
        """The metadata tokenised on its own (no BOS/EOS), as in training."""
        text = self.metadata_text(url, metadata=metadata)
        if text not in self._meta_cache:
            if len(self._meta_cache) >= 65536:  # bound the memory on web-scale host counts
                self._meta_cache.clear()
            self._meta_cache[text] = self._encode(text)
        ids = list(self._meta_cache[text])
        if not ids:
            raise ValueError(
                f"metadata text {self.metadata_text(url, metadata=metadata)!r} encodes to no tokens"
            )
        return ids

    def __call__(
        self, doc_ids: Any, url: str | None = None, *, metadata: str | None = None
    ) -> MeCoExample:
        """Format one document. ``doc_ids`` are its token ids without BOS/EOS (a string is
        encoded first). With ``url`` or ``metadata`` the metadata is prepended and masked;
        with neither the document is formatted plainly (baseline / cooldown)."""
        ids = self._encode(doc_ids) if isinstance(doc_ids, str) else _as_id_list(doc_ids, "doc_ids")
        meta = [] if url is None and metadata is None else self.metadata_ids(url, metadata=metadata)
        input_ids = [self.bos_id, *meta, *ids, self.eos_id]
        labels = list(input_ids)
        for i in range(1 + len(meta)):
            labels[i] = IGNORE_INDEX
        return MeCoExample(
            torch.tensor(input_ids, dtype=torch.long), torch.tensor(labels, dtype=torch.long)
        )

    def condition_prompt(
        self,
        prompt: str,
        url: str | None = None,
        *,
        metadata: str | None = None,
        mode: PromptMode = "ids",
        add_bos: bool = True,
    ) -> torch.Tensor:
        """Prompt ids for (conditional) inference.

        - ``mode="ids"`` (default, training-consistent): ``[BOS] + metadata_ids + encode(prompt)``,
          the metadata tokenised separately exactly as in training.
        - ``mode="text"`` (the reference's evaluation,
          ``princeton-pli/MeCo:olmes-eval/oe_eval/models/eleuther_huggingface.py``:
          ``context = prefix_text + context``): ``[BOS] + encode(metadata_text + prompt)``;
          the tokens at the seam may merge differently than in training.

        With neither ``url`` nor ``metadata`` the prompt is unconditioned. Pass a real URL or
        a fabricated one (the paper's ``"www.factcheckfun.com"``) alike.
        """
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
        if mode not in ("ids", "text"):
            raise ValueError(f"mode must be 'ids' or 'text', got {mode!r}")
        head = [self.bos_id] if add_bos else []
        if url is None and metadata is None:
            body = self._encode(prompt) if prompt else []
        elif mode == "ids":
            body = self.metadata_ids(url, metadata=metadata) + (
                self._encode(prompt) if prompt else []
            )
        else:
            body = self._encode(self.metadata_text(url, metadata=metadata) + prompt)
        return torch.tensor(head + body, dtype=torch.long)


def masked_lm_loss(
    logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """Next-token cross-entropy over positions whose (shifted) label is not -100.

    ``logits`` ``[..., T, V]`` and ``labels`` ``[..., T]``, as a transformers causal LM sees
    them: position ``t`` predicts ``labels[t + 1]``. ``reduction="sum"`` gives the summed loss
    (for token-weighted averages across batches). A batch with no labelled position is an
    error rather than a NaN.
    """
    if not isinstance(logits, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise TypeError("logits and labels must be tensors")
    if logits.dim() < 2 or logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} must be labels {tuple(labels.shape)} + [vocab]"
        )
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    shift_logits = logits[..., :-1, :].reshape(-1, logits.shape[-1])
    if shift_logits.dtype in (torch.float16, torch.bfloat16):
        shift_logits = shift_logits.float()
    shift_labels = labels[..., 1:].reshape(-1)
    if not bool((shift_labels != IGNORE_INDEX).any()):
        raise ValueError("labels have no position with a target (all -100 after the shift)")
    return torch.nn.functional.cross_entropy(
        shift_logits, shift_labels, ignore_index=IGNORE_INDEX, reduction=reduction
    )

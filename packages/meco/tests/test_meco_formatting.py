from __future__ import annotations

import functools
import math
import warnings

import pytest
import torch

from trainforge_meco import (
    IGNORE_INDEX,
    MeCoFormatter,
    masked_lm_loss,
    resolve_special_ids,
    url_host,
    url_to_metadata,
)

BOS, EOS = 256, 257


def enc(text: str) -> list[int]:
    return list(text.encode())


# -- metadata strings ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://en.wikipedia.org/wiki/X", "en.wikipedia.org"),
        ("http://www.example.com", "www.example.com"),
        ("HTTPS://News.BBC.co.uk/a/b?c=d", "News.BBC.co.uk"),  # kept as written (reference)
        ("en.wikipedia.org/wiki/Y", "en.wikipedia.org"),
        ("https://user:pw@host.io:8080/x", "host.io:8080"),
        ("https://192.168.0.1/index.html", "192.168.0.1"),
        # "://" in the path is valid (it used to be refused as "another scheme").
        ("https://web.archive.org/web/2020/https://example.com/a", "web.archive.org"),
        ("web.archive.org/web/2020/http://x.org", "web.archive.org"),
    ],
)
def test_url_host_keeps_subdomains(url: str, host: str) -> None:
    assert url_host(url) == host


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("host", "en.wikipedia.org"),
        ("domain", "wikipedia.org"),
        ("suffix", "org"),
        ("fixed", "www.factcheckfun.com"),
    ],
)
def test_url_modes_give_documented_strings(mode: str, expected: str) -> None:
    url = "https://en.wikipedia.org/wiki/X"
    assert url_to_metadata(url, mode, fixed_url="www.factcheckfun.com") == expected


def test_domain_and_suffix_handle_second_level_suffixes() -> None:
    pytest.importorskip("tldextract")
    assert url_to_metadata("https://news.bbc.co.uk/x", "domain") == "bbc.co.uk"
    assert url_to_metadata("https://news.bbc.co.uk/x", "suffix") == "co.uk"
    # suffixes a hand-written two-label list misses (the Public Suffix List has them)
    assert url_to_metadata("https://www.city.kawasaki.jp/x", "domain") == "city.kawasaki.jp"
    assert url_to_metadata("https://a.b.gov.br/x", "suffix") == "gov.br"
    assert url_to_metadata("https://shop.example.co.jp/x", "domain") == "example.co.jp"
    assert url_to_metadata("https://localhost/x", "domain") == "localhost."  # as the reference


# URLs of the kinds a web crawl holds, and cases where hand-written rules go wrong.
REFERENCE_URLS = [
    "https://en.wikipedia.org/wiki/Genesis",
    "http://www.example.com",
    "https://News.BBC.co.uk/a/b?c=d",
    "https://WWW.Example.COM/Path",
    "https://host.io:8080/x",
    "https://192.168.0.1/index.html",
    "https://web.archive.org/web/2020/https://example.com/a",
    "web.archive.org/web/2020/http://x.org",
    "https://foo.blogspot.com/2020/01/post.html",
    "https://www.city.kawasaki.jp/index.html",
    "https://shop.example.co.jp/item",
    "https://a.b.gov.br/x",
    "https://example.com./trailing-dot",
    "https://my-site.github.io/page",
    "https://sub.domain.example.ac.uk/x",
    "http://xn--bcher-kva.de/",
    "https://localhost/x",
    "https://deep.sub.domain.example.org/a/b/c",
]


@functools.cache
def _snapshot_extractor():
    import tldextract

    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


def _reference_metadata(url: str, mode: str, mapping: dict | None = None) -> str:
    """princeton-pli/MeCo:datatools/mds_pack_data.py (the --use_short_url / --use_url_domain /
    --use_url_suffix / --use_url_filtering branch), re-stated: scheme removed with
    re.sub(r"https?://", ...), text before the first "/", tldextract, then the filter. The
    reference's tldextract.extract may fetch a newer suffix list; here the bundled snapshot."""
    import re

    extract = _snapshot_extractor()
    url = re.sub(r"https?://", "", url).split("/")[0]
    if mode == "domain":
        ext = extract(url)
        url = f"{ext.domain}.{ext.suffix}"
    if mode == "suffix":
        url = extract(url).suffix
    if mapping is not None and url not in mapping:
        url = "unknown"
    return url


@pytest.mark.parametrize("mode", ["host", "domain", "suffix"])
def test_metadata_strings_equal_the_reference(mode: str) -> None:
    pytest.importorskip("tldextract")
    ours = [url_to_metadata(u, mode) for u in REFERENCE_URLS]  # type: ignore[arg-type]
    assert ours == [_reference_metadata(u, mode) for u in REFERENCE_URLS]


@pytest.mark.parametrize("mode", ["host", "domain", "suffix"])
def test_allow_list_applies_to_the_modes_value_as_in_the_reference(mode: str) -> None:
    pytest.importorskip("tldextract")
    allowed = {"bbc.co.uk", "org", "en.wikipedia.org", "example.co.jp"}
    ours = [url_to_metadata(u, mode, allowed_hosts=allowed) for u in REFERENCE_URLS]  # type: ignore[arg-type]
    assert ours == [_reference_metadata(u, mode, allowed) for u in REFERENCE_URLS]
    assert len(set(ours)) > 1  # the filter kept some and dropped others


def test_documented_differences_from_the_reference_host() -> None:
    # credentials dropped, a query right after the host cut, an upper-case scheme removed
    assert url_host("https://user:pw@host.io/x") == "host.io"
    assert url_host("https://example.com?q=1") == "example.com"
    assert url_host("HTTP://Example.com/x") == "Example.com"


def test_domain_modes_without_tldextract_name_the_extra(monkeypatch) -> None:
    import sys

    import trainforge_meco.formatting as formatting

    monkeypatch.setattr(formatting, "_EXTRACTOR", None)
    monkeypatch.setitem(sys.modules, "tldextract", None)  # import fails
    with pytest.raises(ImportError, match=r"trainforge-meco\[domains\]"):
        url_to_metadata("https://a.com", "domain")
    assert url_to_metadata("https://a.com", "host") == "a.com"  # host mode needs nothing


def test_hash_mode_is_a_stable_opaque_id_per_host() -> None:
    a = url_to_metadata("https://en.wikipedia.org/wiki/A", "hash")
    b = url_to_metadata("http://en.wikipedia.org/wiki/B", "hash")
    c = url_to_metadata("https://de.wikipedia.org/wiki/A", "hash")
    assert a == b != c
    assert len(a) == 16 and all(ch in "0123456789abcdef" for ch in a)
    assert "wikipedia" not in a


def test_allowed_hosts_maps_others_to_unknown() -> None:
    allowed = {"en.wikipedia.org"}
    assert (
        url_to_metadata("https://en.wikipedia.org/x", allowed_hosts=allowed) == "en.wikipedia.org"
    )
    assert url_to_metadata("https://spam.biz/x", allowed_hosts=allowed) == "unknown"


@pytest.mark.parametrize(
    "url",
    [
        "",
        "   ",
        "https://",
        "ftp://example.com/x",
        "https://exa mple.com",
        "https:///path",
        "https://bad_host!.com/",
    ],
)
def test_malformed_url_is_a_value_error(url: str) -> None:
    with pytest.raises(ValueError, match="url"):
        url_host(url)


def test_url_bad_types_and_modes() -> None:
    with pytest.raises(TypeError, match="url must be a string"):
        url_host(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode must be one of"):
        url_to_metadata("https://a.com", "path")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fixed_url"):
        url_to_metadata("https://a.com", "fixed")
    with pytest.raises(ValueError, match="hash_length"):
        url_to_metadata("https://a.com", "hash", hash_length=2)
    with pytest.raises(TypeError, match="allowed_hosts must be a collection"):
        url_to_metadata("https://a.com", allowed_hosts="a.com")


# -- golden format -------------------------------------------------------------------------
def test_golden_format_and_label_mask(char_tok) -> None:
    fmt = MeCoFormatter(char_tok)
    doc = [10, 20, 30, 40]
    ids, labels = fmt(doc, "https://en.wikipedia.org/wiki/X")
    meta = enc("URL: en.wikipedia.org\n\n")
    expected = [BOS, *meta, *doc, EOS]
    assert ids.tolist() == expected
    n_masked = 1 + len(meta)
    assert labels[:n_masked].tolist() == [IGNORE_INDEX] * n_masked
    assert labels[n_masked:].tolist() == expected[n_masked:]
    assert ids.dtype == labels.dtype == torch.long


def test_metadata_is_tokenised_separately_from_the_document() -> None:
    # A tokenizer that merges "\n\nA" into one id: joint tokenisation would differ.
    def merging(text: str) -> list[int]:
        out, i = [], 0
        while i < len(text):
            if text.startswith("\n\nA", i):
                out.append(999)
                i += 3
            else:
                out.append(ord(text[i]))
                i += 1
        return out

    fmt = MeCoFormatter(merging, bos_id=1, eos_id=2)
    ids, _ = fmt("And", "https://a.com")
    assert 999 not in ids.tolist()
    assert ids.tolist() == [1, *merging("URL: a.com\n\n"), *merging("And"), 2]
    # the reference's text mode for inference joins the strings first, and does merge
    text_ids = fmt.condition_prompt("And", "https://a.com", mode="text").tolist()
    assert 999 in text_ids
    assert fmt.condition_prompt("And", "https://a.com", mode="ids").tolist() == ids.tolist()[:-1]


def test_plain_format_for_baseline_and_cooldown(char_tok) -> None:
    ids, labels = MeCoFormatter(char_tok)([5, 6, 7])
    assert ids.tolist() == [BOS, 5, 6, 7, EOS]
    assert labels.tolist() == [IGNORE_INDEX, 5, 6, 7, EOS]


def test_custom_prefix_suffix_and_free_text_metadata(char_tok) -> None:
    fmt = MeCoFormatter(char_tok, prefix="Source: ", suffix="\n")
    ids, labels = fmt("x", metadata="Genesis")
    meta = enc("Source: Genesis\n")
    assert ids.tolist() == [BOS, *meta, ord("x"), EOS]
    assert int((labels == IGNORE_INDEX).sum()) == 1 + len(meta)


def test_string_documents_and_numpy_ids_are_accepted(char_tok) -> None:
    import numpy as np

    fmt = MeCoFormatter(char_tok)
    a = fmt("hi", "https://a.com").input_ids
    b = fmt(np.array(enc("hi")), "https://a.com").input_ids
    c = fmt(torch.tensor(enc("hi")), "https://a.com").input_ids
    assert a.tolist() == b.tolist() == c.tolist()


def test_works_with_hf_and_tokenizers_tokenizers() -> None:
    from trainforge_core.data import kjv_hf_tokenizer, kjv_tokenizer

    hf, raw = kjv_hf_tokenizer(), kjv_tokenizer()
    a = MeCoFormatter(hf)("In the beginning", "https://genesis.kjv/1")
    b = MeCoFormatter(raw)("In the beginning", "https://genesis.kjv/1")
    assert a.input_ids.tolist() == b.input_ids.tolist()
    assert a.input_ids[0] == hf.bos_token_id and a.input_ids[-1] == hf.eos_token_id
    text = hf.decode(a.input_ids[1:-1])
    assert text == "URL: genesis.kjv\n\nIn the beginning"


def test_condition_prompt_modes(char_tok) -> None:
    fmt = MeCoFormatter(char_tok)
    plain = fmt.condition_prompt("Q:")
    assert plain.tolist() == [BOS, *enc("Q:")]
    ids = fmt.condition_prompt("Q:", url="www.factcheckfun.com")
    assert ids.tolist() == [BOS, *enc("URL: www.factcheckfun.com\n\n"), *enc("Q:")]
    assert fmt.condition_prompt("Q:", url="https://a.com", add_bos=False)[0] != BOS


# -- special tokens ------------------------------------------------------------------------
def test_tokenizer_without_bos_uses_eos_and_says_so() -> None:
    class EosOnly:
        eos_token_id = 7
        bos_token_id = None

        def __call__(self, text: str) -> list[int]:
            return [100 + ord(c) % 50 for c in text]

    with pytest.warns(UserWarning, match="no BOS token; using the EOS id 7"):
        fmt = MeCoFormatter(EosOnly())
    assert fmt.special.bos == fmt.special.eos == 7 and fmt.special.bos_source == "eos"
    ids, labels = fmt([1, 2], "https://a.com")
    assert ids[0] == 7 and ids[-1] == 7 and labels[0] == IGNORE_INDEX


def test_tokenizer_without_eos_uses_bos() -> None:
    with pytest.warns(UserWarning, match="no EOS token; using the BOS id 3"):
        special = resolve_special_ids(lambda t: [1], bos_id=3)
    assert (special.bos, special.eos, special.eos_source) == (3, 3, "bos")


def test_tokenizer_without_any_special_token_is_an_error() -> None:
    with pytest.raises(ValueError, match="neither a BOS nor an EOS"):
        MeCoFormatter(lambda t: [1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert MeCoFormatter(lambda t: [1], bos_id=0, eos_id=1).special.bos_source == "argument"


def test_formatter_bad_inputs(char_tok) -> None:
    with pytest.raises(TypeError, match="tokenizer"):
        MeCoFormatter(None)
    with pytest.raises(TypeError, match="tokenizer"):
        MeCoFormatter(3)
    with pytest.raises(ValueError, match="url_mode"):
        MeCoFormatter(char_tok, url_mode="path")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fixed_url"):
        MeCoFormatter(char_tok, url_mode="fixed")
    with pytest.raises(TypeError, match="prefix and suffix"):
        MeCoFormatter(char_tok, prefix=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bos_id"):
        MeCoFormatter(char_tok, bos_id=-1)
    fmt = MeCoFormatter(char_tok)
    with pytest.raises(TypeError, match="doc_ids"):
        fmt([1.5, 2.0])
    with pytest.raises(TypeError, match="doc_ids"):
        fmt(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="url"):
        fmt([1], "ftp://a.com")
    with pytest.raises(ValueError, match="exactly one of url= and metadata="):
        fmt.metadata_text("https://a.com", metadata="x")
    with pytest.raises(ValueError, match="metadata must be a non-empty string"):
        fmt([1], metadata="  ")
    with pytest.raises(ValueError, match="mode must be 'ids' or 'text'"):
        fmt.condition_prompt("x", url="https://a.com", mode="both")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="prompt must be a string"):
        fmt.condition_prompt(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="text must be a string"):
        fmt.encode(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="encodes to no tokens"):
        MeCoFormatter(lambda t: [], bos_id=0, eos_id=1, prefix="")([1], metadata="x")


# -- masked loss ---------------------------------------------------------------------------
def test_masked_loss_equals_hand_count_over_document_positions(char_tok) -> None:
    torch.manual_seed(0)
    fmt = MeCoFormatter(char_tok)
    ids, labels = fmt([3, 1, 4, 1, 5], "https://a.com")
    logits = torch.randn(len(ids), 300, dtype=torch.float64)
    n_meta = len(enc("URL: a.com\n\n"))
    # by hand: positions t = n_meta .. len-2 predict ids[t+1] (the document and EOS)
    terms = []
    for t in range(len(ids) - 1):
        if t + 1 >= 1 + n_meta:
            logp = logits[t] - torch.logsumexp(logits[t], 0)
            terms.append(-float(logp[ids[t + 1]]))
    assert len(terms) == 5 + 1
    expected = sum(terms) / len(terms)
    assert math.isclose(float(masked_lm_loss(logits, labels)), expected, rel_tol=1e-6)
    assert math.isclose(
        float(masked_lm_loss(logits, labels, reduction="sum")), sum(terms), rel_tol=1e-6
    )


def test_masked_loss_matches_transformers_loss() -> None:
    from trainforge_core.models import tiny_llama

    model = tiny_llama(vocab_size=300, hidden_size=32, num_layers=1, num_heads=2).eval()
    fmt = MeCoFormatter(lambda t: list(t.encode()), bos_id=256, eos_id=257)
    ids, labels = fmt(list(range(40, 60)), "https://a.com")
    with torch.no_grad():
        out = model(input_ids=ids[None], labels=labels[None])
    assert torch.allclose(out.loss, masked_lm_loss(out.logits, labels[None]), atol=1e-5)


def test_masked_loss_bad_inputs() -> None:
    with pytest.raises(ValueError, match="no position with a target"):
        masked_lm_loss(torch.randn(4, 9), torch.full((4,), IGNORE_INDEX))
    with pytest.raises(ValueError, match="must be labels"):
        masked_lm_loss(torch.randn(4, 9), torch.zeros(5, dtype=torch.long))
    with pytest.raises(TypeError, match="tensors"):
        masked_lm_loss([1.0], torch.zeros(1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reduction"):
        masked_lm_loss(torch.randn(4, 9), torch.zeros(4, dtype=torch.long), reduction="none")

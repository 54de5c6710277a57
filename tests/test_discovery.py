"""Nightly candidates from a tag list (pure): the tag pattern made from the configured tag format,
the arch/ROCm/date filter, the order (newest date, then newest version), and the preview rule;
fixed cases and hypothesis properties checked against an independent hand-written parser."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import random
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from packaging.version import Version

from ci.arch import ArchResolution
from ci.config import load_config
from ci.errors import UserError
from ci.images import (
    candidate_images,
    discovered_candidates,
    matching_tags,
    parse_tag,
    tag_pattern,
    tag_shape,
)
from ci.plan import ImageSource, build_plan, load_tree, render_plan
from ci.versions import newest_release, version_key

CONFIG = load_config(env={})
IMAGES = CONFIG.images
MI300 = CONFIG.arches["mi300"]  # image arch mi30x
MI355 = CONFIG.arches["mi355"]  # image arch mi35x
TODAY = dt.date(2026, 4, 21)
PREVIEWS = dataclasses.replace(IMAGES, use_preview=True)


def names(candidates) -> list[str]:
    return [c.tag for c in candidates]


# --- fixed cases ------------------------------------------------------------------------------------
MIXED = [
    "v0.5.9-rocm700-mi30x-20260421",
    "v0.5.10-rocm700-mi30x-20260420",
    "v0.5.10rc1-rocm700-mi30x-20260421",
    "v0.5.10-rocm700-mi30x-20260421",
    "v0.5.10-rocm700-mi30x-20260421-preview",
    "v0.5.11-rocm700-mi35x-20260421",  # another arch
    "v0.5.11-rocm720-mi30x-20260421",  # another ROCm
    "v0.5.11-rocm700-mi30x-20260422",  # tomorrow: outside the window
    "v0.5.11-rocm700-mi30x-20260414",  # 7 days back: outside a 7-day window (today and 6 back)
    "v0.5.8-rocm700-mi30x-20260415",  # 6 days back: inside
    "latest", "nightly", "v0.5.10-rocm700-mi30x-2026042", "v0.5.10-rocm700-mi30x-20261341",  # malformed
    "v0.5.10-rocm700-mi30x-20260421-other", "x0.5.10-rocm700-mi30x-20260421", "v0.5.10-rocm700-mi30x",
]


def test_newest_date_first_then_newest_version_and_previews_ignored():
    assert names(discovered_candidates(IMAGES, MI300, TODAY, MIXED)) == [
        "v0.5.10-rocm700-mi30x-20260421",
        "v0.5.10rc1-rocm700-mi30x-20260421",  # a release candidate below its release...
        "v0.5.9-rocm700-mi30x-20260421",  # ...and above the release before it
        "v0.5.10-rocm700-mi30x-20260420",
        "v0.5.8-rocm700-mi30x-20260415",
    ]


def test_the_arch_and_rocm_pick_their_own_tags():
    assert names(discovered_candidates(IMAGES, MI355, TODAY, MIXED)) == ["v0.5.11-rocm700-mi35x-20260421"]
    assert names(discovered_candidates(IMAGES, MI300, TODAY, MIXED, rocm="rocm720")) == ["v0.5.11-rocm720-mi30x-20260421"]
    assert discovered_candidates(IMAGES, MI300, TODAY, MIXED, rocm="rocm724") == ()
    with pytest.raises(UserError, match="unknown ROCm version 'rocm999'"):
        discovered_candidates(IMAGES, MI300, TODAY, MIXED, rocm="rocm999")


def test_with_use_preview_a_preview_ranks_right_below_its_non_preview():
    got = names(discovered_candidates(PREVIEWS, MI300, TODAY, MIXED + ["v0.5.9-rocm700-mi30x-20260420-preview"]))
    assert got == [
        "v0.5.10-rocm700-mi30x-20260421",
        "v0.5.10-rocm700-mi30x-20260421-preview",
        "v0.5.10rc1-rocm700-mi30x-20260421",
        "v0.5.9-rocm700-mi30x-20260421",
        "v0.5.10-rocm700-mi30x-20260420",
        "v0.5.9-rocm700-mi30x-20260420-preview",  # the newest of its day is a preview: taken in its place
        "v0.5.8-rocm700-mi30x-20260415",
    ]


def test_a_preview_alone_on_the_newest_day_wins_only_with_use_preview():
    tags = ["v0.5.10-rocm700-mi30x-20260421-preview", "v0.5.10-rocm700-mi30x-20260420"]
    assert names(discovered_candidates(IMAGES, MI300, TODAY, tags)) == ["v0.5.10-rocm700-mi30x-20260420"]
    assert names(discovered_candidates(PREVIEWS, MI300, TODAY, tags))[0] == "v0.5.10-rocm700-mi30x-20260421-preview"


@pytest.mark.parametrize("lower, higher", [
    ("v0.5.9", "v0.5.10"), ("v0.5.10rc1", "v0.5.10"), ("v0.5.10rc1", "v0.5.10rc2"), ("v0.5.10", "v0.5.10.post1"),
    ("v0.5.9.post3", "v0.5.10rc0"), ("v0.5.10", "v0.6.0"), ("v0.9.9", "v1.0.0"), ("0.5.9", "v0.5.10"),
])
def test_version_order(lower, higher):
    tags = [f"{v}-rocm700-mi30x-20260421" for v in (lower, higher)]
    assert names(discovered_candidates(IMAGES, MI300, TODAY, tags)) == tags[::-1]


def test_the_window_is_lookback_days_and_a_shorter_one_narrows_it():
    tags = [f"v0.5.10-rocm700-mi30x-{TODAY - dt.timedelta(days=back):%Y%m%d}" for back in range(10)]
    assert len(discovered_candidates(IMAGES, MI300, TODAY, tags)) == 7
    assert names(discovered_candidates(dataclasses.replace(IMAGES, lookback_days=1), MI300, TODAY, tags)) == [tags[0]]


def test_the_same_tag_twice_is_one_candidate_and_non_strings_are_ignored():
    tags = ["v0.5.10-rocm700-mi30x-20260421"] * 3 + [None, 5, {"tag": "x"}]
    assert names(discovered_candidates(IMAGES, MI300, TODAY, tags)) == ["v0.5.10-rocm700-mi30x-20260421"]


def test_the_pattern_comes_from_tag_format_and_date_format():
    """One home for the format: a site with another tag shape changes config, not code."""
    images = dataclasses.replace(IMAGES, tag_format="{image_arch}_{rocm}_{date}_{version}", date_format="%Y.%m.%d",
                                 versions=("v0.5.10", "v0.5.9"))
    built = candidate_images(images, MI300, TODAY)
    assert built[0].tag == "mi30x_rocm700_2026.04.21_v0.5.10"
    assert names(discovered_candidates(images, MI300, TODAY, names(reversed(built)))) == names(built)
    assert tag_shape(images, MI300) == "rocm/sgl-dev:mi30x_rocm700_<YYYY.MM.DD>_<version>"
    assert tag_shape(PREVIEWS, MI355, "rocm720") == "rocm/sgl-dev:<version>-rocm720-mi35x-<YYYYMMDD>[-preview]"


def test_matching_tags_keeps_every_date_for_the_error_message():
    older = matching_tags(IMAGES, MI300, ["v0.5.9-rocm700-mi30x-20250101", "v0.5.10-rocm700-mi30x-20250102"])
    assert [t.tag for t in older] == ["v0.5.10-rocm700-mi30x-20250102", "v0.5.9-rocm700-mi30x-20250101"]
    assert discovered_candidates(IMAGES, MI300, TODAY, [t.tag for t in older]) == ()


def test_newest_release_among_git_tags():
    tags = ["v0.5.9", "v0.5.10rc1", "v0.5.10", "gateway-v9.9.9", "sgl-kernel-v0.4.0", "v0.5.10-rc-docs", "latest",
            "v0.5.10.post1", "v0.5.11rc0"]
    assert newest_release(tags) == "v0.5.11rc0"  # SGLang's own order: a new release candidate is the newest
    assert newest_release([t for t in tags if "rc0" not in t]) == "v0.5.10.post1"
    assert newest_release(["gateway-v1.0.0", "main"]) is None
    assert version_key("v0.5.10+local") is None  # a local version cannot be in a Docker tag


# --- the plan --------------------------------------------------------------------------------------
def test_the_plan_needs_no_network_and_takes_a_tag_list_when_given(tmp_path):
    resolution = ArchResolution(MI300, "--arch")
    tree = load_tree(CONFIG, tmp_path)  # an empty test tree: the images are the point here
    waiting = build_plan(CONFIG, "stage-a", resolution, TODAY, tree)
    assert waiting.images == () and waiting.image_source is ImageSource.PULL_TIME
    assert any("discovered at pull time from docker.io's tag list" in line for line in render_plan(waiting))
    given_list = build_plan(CONFIG, "stage-a", resolution, TODAY, tree, tags=MIXED)
    lines = render_plan(given_list)
    assert any("5 candidate(s) in the given tag list matching rocm/sgl-dev:<version>-rocm700-mi30x-<YYYYMMDD>" in line
               for line in lines)
    assert lines.index("    rocm/sgl-dev:v0.5.10-rocm700-mi30x-20260421") < lines.index("    rocm/sgl-dev:v0.5.9-rocm700-mi30x-20260421")


# --- properties -------------------------------------------------------------------------------------
# An independent parser, written by hand for the shipped format: the oracle for the properties.
ORACLE = re.compile(r"(v?[0-9][A-Za-z0-9_.]*)-rocm700-mi30x-([0-9]{8})(-preview)?")


def oracle(tag: str):
    match = ORACLE.fullmatch(tag)
    if not match:
        return None
    try:
        date = dt.datetime.strptime(match.group(2), "%Y%m%d").date()
        version = Version(match.group(1))
    except ValueError:
        return None
    return date, version, bool(match.group(3))


def qualifies(tag: str, images) -> bool:
    parsed = oracle(tag)
    return (parsed is not None and TODAY - dt.timedelta(days=images.lookback_days - 1) <= parsed[0] <= TODAY
            and (images.use_preview or not parsed[2]))


versions = st.builds(
    lambda major, minor, patch, extra: f"v{major}.{minor}.{patch}{extra}",
    st.integers(0, 2), st.integers(0, 12), st.integers(0, 12),
    st.sampled_from(["", "", "", "rc0", "rc1", "rc2", ".post1", "a1", ".dev3"]))
structured = st.builds(
    lambda version, rocm, arch, back, preview: (f"{version}-{rocm}-{arch}-{TODAY - dt.timedelta(days=back):%Y%m%d}"
                                                + ("-preview" if preview else "")),
    versions, st.sampled_from(["rocm700", "rocm700", "rocm720", "rocm630"]), st.sampled_from(["mi30x", "mi30x", "mi35x", "mi40x"]),
    st.integers(-3, 12), st.booleans())
garbage = st.text(alphabet="abcmirox0123456789v.-_", max_size=40)
tag_lists = st.lists(st.one_of(structured, structured, structured, garbage), max_size=60)
PROPERTY = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(tag_lists, st.booleans())
def test_property_exactly_the_qualifying_tags_come_out(tags, use_preview):
    images = PREVIEWS if use_preview else IMAGES
    got = names(discovered_candidates(images, MI300, TODAY, tags))
    assert len(got) == len(set(got))
    assert set(got) == {t for t in tags if qualifies(t, images)}  # foreign arch/ROCm, old, future, malformed: out


@PROPERTY
@given(tag_lists, st.booleans())
def test_property_newest_date_then_newest_version_then_non_preview(tags, use_preview):
    images = PREVIEWS if use_preview else IMAGES
    keys = [oracle(t) for t in names(discovered_candidates(images, MI300, TODAY, tags))]
    for (date_a, version_a, preview_a), (date_b, version_b, preview_b) in itertools.pairwise(keys):
        assert (date_a, version_a) >= (date_b, version_b)
        if (date_a, version_a) == (date_b, version_b):
            assert not preview_a or preview_b  # a preview never comes before the non-preview of its version and day


@PROPERTY
@given(tag_lists, st.randoms(use_true_random=False))
def test_property_order_of_the_list_does_not_matter(tags, rng: random.Random):
    shuffled = tags + tags[: len(tags) // 2]
    rng.shuffle(shuffled)
    assert discovered_candidates(IMAGES, MI300, TODAY, tags) == discovered_candidates(IMAGES, MI300, TODAY, shuffled)


@PROPERTY
@given(tag_lists)
def test_property_previews_only_add_candidates(tags):
    without = names(discovered_candidates(IMAGES, MI300, TODAY, tags))
    with_previews = names(discovered_candidates(PREVIEWS, MI300, TODAY, tags))
    assert [t for t in with_previews if not t.endswith("-preview")] == without


@PROPERTY
@given(st.lists(versions, min_size=1, max_size=4, unique=True), st.sampled_from(["rocm700", "rocm720", "rocm724"]))
def test_property_names_built_from_the_format_parse_back(override, rocm):
    images = dataclasses.replace(IMAGES, versions=tuple(override))
    pattern = tag_pattern(images, MI355.image_arch, rocm)
    for name in candidate_images(images, MI355, TODAY, rocm):
        parsed = parse_tag(pattern, images.date_format, name.tag)
        assert parsed is not None and parsed.version == Version(name.tag.split("-")[0]) and not parsed.preview
        assert TODAY - dt.timedelta(days=6) <= parsed.date <= TODAY

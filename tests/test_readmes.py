"""The READMEs' links and paths lead somewhere: a renamed heading, figure or reference set breaks them silently."""

import glob
import os
import re

import pytest
from conftest import ROOT

READMES = ["README.md", os.path.join("results", "README.md")]
REFERENCE = os.path.join(ROOT, "results", "reference")


def read(name):
    with open(os.path.join(ROOT, name)) as handle:
        return handle.read()


def anchor(heading):
    """GitHub's id for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("name", READMES)
def test_every_link_in_a_readme_reaches_a_file_or_a_heading(name):
    text = read(name)
    headings = {anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    for target in targets:
        if target.startswith(("http://", "https://")):
            continue
        if target.startswith("#"):
            assert target[1:] in headings, target
        else:
            assert os.path.exists(os.path.join(ROOT, os.path.dirname(name), target.split("#")[0])), target


def test_every_reference_path_the_readme_names_exists():
    paths = set(re.findall(r"`(results/reference/[^`\s<*]*)`", read("README.md")))
    assert paths
    for path in paths:
        assert os.path.exists(os.path.join(ROOT, path)), path


def test_the_results_readme_lists_every_reference_set_and_only_those():
    listed = re.findall(r"^\| `([^`]+)` \|", read(os.path.join("results", "README.md")), re.MULTILINE)
    found = set()
    for entry in listed:
        matches = glob.glob(os.path.join(REFERENCE, entry.replace("<method>", "*")))
        assert matches, entry
        found.add(os.path.relpath(matches[0], REFERENCE).split(os.sep)[0])
    assert found == set(os.listdir(REFERENCE))

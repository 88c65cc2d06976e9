"""Label spaces: dataset orders mapped to the canonical one by name, AU names, VA range."""

from __future__ import annotations

import pytest

from omnifer.errors import OmniferError
from omnifer.labels import (
    DATASET_ORDERS,
    EXPRESSIONS,
    EXPRESSIONS_WITH_CONTEMPT,
    au_name,
    au_names,
    canonical_expression,
    check_va,
    dataset_order,
    expression_index,
)

HAPPY = EXPRESSIONS.index("happiness")


@pytest.mark.parametrize(
    ("order", "label"),
    [("rafdb", 4), ("affectnet", 1), ("fer2013", 3), ("expw", 3), ("affwild2", 4),
     ("canonical", 4)],
)
def test_happiness_in_each_dataset_order(order, label):
    assert expression_index(label, order=order) == HAPPY
    assert expression_index(str(label), order=order) == HAPPY  # "4" in a CSV is the same


@pytest.mark.parametrize(
    ("order", "label", "expected"),
    [("rafdb", 1, "surprise"), ("rafdb", 7, "neutral"), ("affectnet", 0, "neutral"),
     ("affectnet", 6, "anger"), ("fer2013", 0, "anger"), ("fer2013", 6, "neutral"),
     ("affwild2", 1, "anger"), ("expw", 5, "surprise")],
)
def test_other_labels_by_name(order, label, expected):
    assert expression_index(label, order=order) == EXPRESSIONS.index(expected)


@pytest.mark.parametrize("order", ["affectnet", "fer2013", "rafdb", "expw", "affwild2"])
def test_each_order_covers_the_canonical_classes_once(order):
    indices = [expression_index(k, order=order, classes=EXPRESSIONS_WITH_CONTEMPT)
               for k in DATASET_ORDERS[order]]
    assert len(set(indices)) == len(indices)
    assert set(range(len(EXPRESSIONS))) <= set(indices)


@pytest.mark.parametrize(("order", "label"),
                         [("affectnet", 8), ("affectnet", 9), ("affectnet", 10),
                          ("affwild2", -1), ("affwild2", 7)])
def test_not_an_expression_is_missing(order, label):
    assert expression_index(label, order=order) is None


def test_contempt_only_with_the_contempt_vocabulary():
    assert expression_index(7, order="affectnet", classes=EXPRESSIONS_WITH_CONTEMPT) == 7
    with pytest.raises(OmniferError):
        expression_index(7, order="affectnet")  # not in the 7-class space


@pytest.mark.parametrize("name", ["happy", "Happy", " HAPPINESS ", "joy"])
def test_synonyms(name):
    assert canonical_expression(name) == "happiness"
    assert expression_index(name) == HAPPY


def test_unknown_name_lists_known_names():
    with pytest.raises(OmniferError) as err:
        canonical_expression("smug")
    msg = str(err.value)
    assert "'smug'" in msg and "\n" not in msg
    for name in EXPRESSIONS:
        assert name in msg


def test_integer_needs_an_order_and_must_be_in_it():
    with pytest.raises(OmniferError, match="label_order"):
        expression_index(3)
    with pytest.raises(OmniferError, match="not in the label order"):
        expression_index(12, order="fer2013")


def test_order_aliases_and_unknown_order():
    assert dataset_order("RAF-DB") == DATASET_ORDERS["rafdb"]
    assert dataset_order("fer") == DATASET_ORDERS["fer2013"]
    assert dataset_order({0: "happy"}) == {0: "happy"}
    with pytest.raises(OmniferError) as err:
        dataset_order("ckplus")
    assert "affectnet" in str(err.value) and "rafdb" in str(err.value)


def test_au_names():
    assert au_name("au12") == "AU12"
    assert au_name("AU 12") == "AU12"
    assert au_name(6) == "AU6"
    assert au_name("AU01") == "AU1"
    assert au_names(["AU12", "au2", "AU1", "AU 2"]) == ("AU1", "AU2", "AU12")
    with pytest.raises(OmniferError, match="AU<number>"):
        au_name("smile")


def test_check_va():
    assert check_va(-1.0) == -1.0
    assert check_va(1) == 1.0
    with pytest.raises(OmniferError, match="outside"):
        check_va(1.5)

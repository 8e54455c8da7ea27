"""Recipes: the paper's defaults, the demo, and checked overrides."""
import json

import pytest

from adaptor_vlp.train.model import AdaptorInputs
from adaptor_vlp.train.recipe import DEMO, PAPER, RECIPES, Recipe, RecipeError, RecipeName, Selection


def test_paper_recipe_holds_the_published_settings() -> None:
    assert (PAPER.batch_size, PAPER.lr, PAPER.weight_decay, PAPER.warmup_fraction, PAPER.epochs, PAPER.seed) == (
        1024, 2e-5, 0.01, 0.02, 50, 42)
    config = PAPER.adaptor_config(image_dim=768, text_dim=768)
    assert (config.projection_dim, config.num_layers, config.num_heads, config.ffn_dim, config.dropout) == (
        768, 2, 12, 2048, 0.1)
    assert RECIPES[RecipeName.PAPER] is PAPER and RECIPES[RecipeName.DEMO] is DEMO


def test_overrides_convert_grid_and_cli_values_to_the_field_types() -> None:
    recipe = PAPER.with_overrides({"lr": 1, "inputs": "tokens", "select_by": "recall", "use_views": False})

    assert recipe.lr == 1.0 and isinstance(recipe.lr, float)
    assert recipe.inputs is AdaptorInputs.TOKENS and recipe.select_by is Selection.RECALL
    assert recipe.use_views is False and recipe.batch_size == PAPER.batch_size


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"learning_rate": 0.1}, "unknown recipe setting.*learning_rate"),
        ({"batch_size": 1}, "batch_size must be at least 2"),
        ({"batch_size": 32.5}, "batch_size=32.5 must be of type int"),
        ({"data_pct": 0}, "data_pct must be in"),
        ({"inputs": "patches"}, "inputs='patches' is not one of"),
        ({"projection_dim": 100}, "divisible by num_heads"),
        ({"use_views": "yes"}, "use_views='yes' must be of type bool"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(overrides: dict, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        PAPER.with_overrides(overrides)


def test_recipe_round_trips_through_json() -> None:
    recipe = DEMO.with_overrides({"inputs": "tokens", "data_pct": 10})

    assert Recipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe


def test_a_recorded_recipe_missing_settings_is_refused() -> None:
    recorded = PAPER.to_dict()
    del recorded["lr"]
    with pytest.raises(RecipeError, match="lacks.*lr"):
        Recipe.from_dict(recorded)


@pytest.mark.parametrize(("selection", "better", "worse"), [(Selection.LOSS, 1.0, 2.0), (Selection.RECALL, 0.9, 0.5)])
def test_selection_knows_which_direction_improves(selection: Selection, better: float, worse: float) -> None:
    assert selection.improves(better, worse) and not selection.improves(worse, better)
    assert not selection.improves(better, better)
    assert selection.improves(worse, None)

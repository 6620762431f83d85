"""tunekit_train: fine-tune open models from Nova-style recipes.

SFT and DPO, full and LoRA; continued pretraining.

Modules, by job: ``recipe`` (typed recipe, torch-free), ``sources`` / ``data`` (packed rows and batches),
``attention`` (packed attention), ``model`` / ``lora`` (building the model), ``losses``, ``dpo`` (packed
preference pairs and their losses), ``reference`` (DPO reference log-probs), ``optim``,
``loop`` (the one training loop), ``checkpoint``, ``logs``, ``run`` (``train run``), ``status``,
``generate``, ``export``. Only the recipe names are re-exported here, so that loading a recipe does not
import torch.
"""

from tunekit_train.recipe import LoadedRecipe, Recipe, load_recipe, parse_recipe

__all__ = ["LoadedRecipe", "Recipe", "load_recipe", "parse_recipe"]

"""The built-in zoo of tiny heterogeneous agents: recipes, their warm start, and the shipped weights.

Why a zoo: collaborative RL needs agents that differ in *state* (same architecture and size, different weights),
*size* (same family, different parameter counts) and *model* (different architecture and tokenizer)
(docs/method.md §1), that start partly competent so RL has signal, and that cost no download. The package is split
by job:

* `recipes`: what determines an agent (`Recipe`, `RECIPES`, the named sets `PAIRS`, `TEST_RECIPES`);
* `warm_start`: tokenizer, model, supervised warm start and its measurement through the one evaluator;
* `store`: the shipped agents (checked against their manifest), the cache, loading and listing.

Everything a caller needs is re-exported here (``from hacrl.models import zoo; zoo.build("gpt2-char-add")``).
"""

from hacrl.models.zoo.recipes import (
    DEMO_PAIR,
    PAIRS,
    RECIPES,
    TEST_RECIPES,
    ZOO_FORMAT,
    Recipe,
    get_pair,
    get_recipe,
    recipe_key,
)
from hacrl.models.zoo.store import (
    AGENT_META_FILE,
    SHIPPED_DIR,
    TrainedAgent,
    ZooIntegrityError,
    agent_dir,
    build,
    cache_root,
    is_built,
    list_recipes,
    load,
    load_recipe,
    recipe_parameters,
    save_agent,
    ship,
    shipped_dir,
    train_agent,
    verify_shipped,
)
from hacrl.models.zoo.warm_start import (
    build_model,
    build_tokenizer,
    count_parameters,
    encode_example,
    measure_accuracy,
    warm_start,
)

__all__ = ["AGENT_META_FILE", "DEMO_PAIR", "PAIRS", "RECIPES", "SHIPPED_DIR", "TEST_RECIPES", "ZOO_FORMAT", "Recipe",
           "TrainedAgent", "ZooIntegrityError", "agent_dir", "build", "build_model", "build_tokenizer", "cache_root",
           "count_parameters", "encode_example", "get_pair", "get_recipe", "is_built", "list_recipes", "load",
           "load_recipe", "measure_accuracy", "recipe_key", "recipe_parameters", "save_agent", "ship", "shipped_dir",
           "train_agent", "verify_shipped", "warm_start"]

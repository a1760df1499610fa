"""Lessons executed again with other parameters, to cover branches their defaults do not.

The one place to list them: {notebook file name: [parameter overrides, ...]}. Each entry becomes
one test in tests/notebooks/test_parameter_runs.py. Keep each run small: it adds to `make test`.
"""

PARAMETER_RUNS: dict[str, list[dict[str, object]]] = {
    # A single tiny matmul size: the plot and the table must still work with one point.
    "00_welcome_and_setup.ipynb": [{"matmul_sizes": [32], "seconds_per_timing": 0.05}],
    # Fewer hash functions and 4-row bands with a high threshold: LSH misses edition pairs (recall < 1).
    "01_data.ipynb": [
        {"num_perm": 64, "bands": 16, "threshold": 0.3, "naive_num_perm": 4, "block_size": 8}
    ],
    # Tiny sizes: two-point compression plot, a vocabulary barely past the bytes, short parity text.
    "02_tokenization.ipynb": [
        {
            "naive_chars": 5_000,
            "naive_vocab_size": 270,
            "train_chars": 50_000,
            "vocab_size": 300,
            "plot_vocab_sizes": [256, 300],
            "parity_chars": 20_000,
        }
    ],
    # Two heads of width 4, a one-line heatmap, a short timing.
    "03_attention.ipynb": [{"d_model": 8, "n_head": 2, "heatmap_lines": 1, "timing_length": 32}],
    # Two heads: the grouped-query variant becomes multi-query attention (one key/value head).
    "04_gpt_model.ipynb": [
        {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32, "deep_layers": 4}
    ],
    # A few updates of small groups: the loop, the curves, the tables and the parity cells with
    # next to no training (the reward need not rise).
    "14_reinforcement_learning.ipynb": [
        {
            "train_steps": 4,
            "group_size": 4,
            "prompts_per_step": 2,
            "baseline_lines": 200,
            "bpb_chars": 5_000,
            "n_show": 2,
        }
    ],
}

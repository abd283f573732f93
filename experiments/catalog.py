"""The experiments `make demo` runs, in order: read by `run_all` (which runs them) and by
`report` (which builds the page from their results). A module of its own, so that neither of
the two imports the other."""

EXPERIMENTS = [
    "experiments.linear_regression",
    "experiments.mlp_digits",
    "experiments.optimizers",
    "experiments.train_overhead",
    "experiments.vanishing_gradients",
    "experiments.backprop_cost",
    "experiments.mnist1d",
    "experiments.cnn_digits",
    "experiments.bench_cnn",
    "experiments.bench_rnn",
    "experiments.adding_problem",
    "experiments.exploding_gradients",
    "experiments.scaling",
    "experiments.autoencoder",
    "experiments.vae",
    "experiments.gan",
    "experiments.mixed_precision",
    "experiments.memory",
    "experiments.bench_attention",
    "experiments.bench_generate",
    "experiments.char_lm",
    "experiments.graphs",
    "experiments.tree_arithmetic",
    "experiments.multitask",
    "experiments.detection_floor",
]

import json

from experiments import linear_regression


def test_article_example(tmp_path):
    result = linear_regression.main(["--quick", "--out", str(tmp_path)])
    assert "not aligned" in result["article_code_verbatim"]  # the article's shapes fail
    # the article's gradient ignores Y: it does not approach the least-squares line
    ls = result["least_squares"]
    assert abs(result["article_shapes_mended"]["w"] - ls["w"]) > 1.0
    # gradient descent with the right gradient converges to least squares
    assert 1.8 < ls["w"] < 1.9  # Y = 2X + noise
    n = result["iterations_to_reach_least_squares_within_1e-4"]
    assert n is not None and 1000 < n < 20000
    assert result["gradient_descent"]["distance_to_least_squares"] < 0.1
    assert json.loads((tmp_path / "linear_regression.json").read_text())["alpha"] == 0.01
    assert (tmp_path / "linear_regression.png").stat().st_size > 0

"""Registry behaviour: listing, filtering, helpful errors."""
import pytest

import resnetkit as rk

REQUIRED = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
            "resnext101_32x8d", "wide_resnet50_2", "wide_resnet101_2"]


def test_list_models_is_sorted_and_complete():
    names = rk.list_models()
    assert names == sorted(names)
    assert set(REQUIRED) <= set(names)


def test_list_models_filters_with_fnmatch():
    assert rk.list_models("resnext*") == [n for n in rk.list_models() if n.startswith("resnext")]
    assert "resnet50" in rk.list_models("resnet*")


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match="resnet50"):
        rk.create_model("resnet5O")


def test_unknown_kwarg_is_a_type_error_with_suggestion():
    with pytest.raises(TypeError, match="deep_stem"):
        rk.create_model("resnet18", deep_sten=True)


def test_out_indices_without_features_only_is_refused():
    with pytest.raises(ValueError, match="features_only"):
        rk.create_model("resnet18", out_indices=(1, 2))


def test_register_model_rejects_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        rk.register_model()(rk.models.resnet.resnet18)


@pytest.mark.parametrize("name, kwargs", [("resnet18", {"block": rk.Bottleneck}),
                                          ("resnext50_32x4d", {"groups": 8}), ("ghostnet_100", {"width": 2.0})])
def test_argument_fixed_by_the_architecture_is_named(name, kwargs):
    (arg,) = kwargs
    with pytest.raises(TypeError, match=rf"'{arg}' is fixed by the {name} architecture"):
        rk.create_model(name, **kwargs)


def test_unknown_plugin_option_is_named_at_construction():
    spec = [dict(cfg=dict(type="SE", ration=4), position="after_conv2", stages=(True, False, False, False))]
    with pytest.raises(ValueError, match=r"plugin 'SE' has no option\(s\) \['ration'\]; its options are \['ratio'\]"):
        rk.create_model("resnet18", plugins=spec)

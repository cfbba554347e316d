import json

import pytest

from dask_rec import (
    CHOLMODGramianFactorizerConfig,
    ExactUnitLowerTriangleInverterConfig,
    ICFGramianFactorizerConfig,
    SANSAConfig,
    UMRUnitLowerTriangleInverterConfig,
)
from dask_rec.config import config_from_dict, config_to_dict


@pytest.mark.parametrize("l2", [0, -1.0])
def test_l2_must_be_positive(l2):
    with pytest.raises(ValueError, match="l2 must be > 0"):
        SANSAConfig(l2=l2)


@pytest.mark.parametrize("density", [0.0, -0.1, 1.5])
def test_density_must_be_in_unit_interval(density):
    with pytest.raises(ValueError, match=r"weight_matrix_density must be in \(0, 1\]"):
        SANSAConfig(weight_matrix_density=density)


def test_non_numeric_l2_is_a_type_error():
    with pytest.raises(TypeError, match="l2 must be a finite real number"):
        SANSAConfig(l2="10")
    with pytest.raises(TypeError, match="l2"):
        SANSAConfig(l2=float("nan"))


def test_wrong_config_objects_are_named():
    with pytest.raises(TypeError, match="gramian_factorizer_config"):
        SANSAConfig(gramian_factorizer_config=UMRUnitLowerTriangleInverterConfig())
    with pytest.raises(TypeError, match="lower_triangle_inverter_config"):
        SANSAConfig(lower_triangle_inverter_config=ICFGramianFactorizerConfig())


def test_reordering_method_is_checked_and_normalised():
    assert ICFGramianFactorizerConfig(reordering_method="COLAMD").reordering_method == "colamd"
    with pytest.raises(ValueError, match="reordering_method must be one of colamd, amd, popularity, natural"):
        CHOLMODGramianFactorizerConfig(reordering_method="metis")


def test_umr_counts_are_checked():
    with pytest.raises(ValueError, match="scans"):
        UMRUnitLowerTriangleInverterConfig(scans=-1)
    with pytest.raises(ValueError, match="finetune_steps"):
        UMRUnitLowerTriangleInverterConfig(finetune_steps=1.5)


def test_reference_defaults():
    umr = UMRUnitLowerTriangleInverterConfig()
    assert (umr.scans, umr.finetune_steps, umr.log_norm_threshold) == (1, 10, -7.0)
    icf = ICFGramianFactorizerConfig()
    assert (icf.factorization_shift_step, icf.factorization_shift_multiplier) == (1e-3, 2.0)


@pytest.mark.parametrize(
    "config",
    [
        SANSAConfig(),
        SANSAConfig(1.5, 0.01, CHOLMODGramianFactorizerConfig(), ExactUnitLowerTriangleInverterConfig()),
        SANSAConfig(3.0, 1.0, ICFGramianFactorizerConfig(0.1, 3.0, "amd"), UMRUnitLowerTriangleInverterConfig(3, 5, -5)),
    ],
)
def test_config_round_trips_through_json(config):
    assert config_from_dict(json.loads(json.dumps(config_to_dict(config)))) == config

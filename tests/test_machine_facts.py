"""Benchmarks name their CPU: a VM's model name alone ("AMD EPYC") hides the generation."""
from ustumor.utils.cpu import cpu_model, describe_machine, machine_facts

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
flags\t\t: fpu avx2

processor\t: 1
cpu family\t: 99
model\t\t: 99
model name\t: Another CPU
"""


def test_the_cpu_model_carries_its_family_and_model_numbers(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    assert cpu_model(str(path)) == "AMD EPYC (family 25, model 17)"


def test_a_cpuinfo_without_numbers_gives_the_name_alone(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nmodel name\t: Some ARM core\n")
    assert cpu_model(str(path)) == "Some ARM core"


def test_the_machine_line_names_the_cpu_and_the_isas():
    facts = machine_facts()
    line = describe_machine(facts)
    assert facts["cpu_model"] in line and f"ATen {facts['aten_isa']}" in line

"""The machine a run ran on, as its manifest and the report record it."""

import json

from omnifer import host
from omnifer.workspace import Workspace

EPYC = """processor	: 0
vendor_id	: AuthenticAMD
cpu family	: 25
model		: 17
model name	: AMD EPYC
stepping	: 1
flags		: fpu sse4_2 avx avx2 avx512f avx512bw

processor	: 1
model name	: Another CPU
"""
GRAVITON = """processor	: 0
BogoMIPS	: 243.75
Features	: fp asimd evtstrm aes sve
CPU implementer	: 0x41
"""


def test_cpu_of_a_virtual_machine_names_family_and_model_and_the_widest_vectors(tmp_path):
    (tmp_path / "cpuinfo").write_text(EPYC)
    c = host.cpu(str(tmp_path / "cpuinfo"))
    assert c["model"] == "AMD EPYC (family 25 model 17 stepping 1)"  # the first processor's
    assert c["vector"] == "avx512" and c["cores"] >= 1
    (tmp_path / "cpuinfo").write_text(EPYC.replace(" avx512f avx512bw", ""))
    assert host.cpu(str(tmp_path / "cpuinfo"))["vector"] == "avx2"
    assert host.describe({"model": "X", "cores": 2, "vector": "avx2"}) == "X, 2 cores, avx2"


def test_cpu_without_model_name_or_cpuinfo_still_says_something(tmp_path):
    (tmp_path / "cpuinfo").write_text(GRAVITON)
    c = host.cpu(str(tmp_path / "cpuinfo"))
    assert c["model"] and c["vector"] == "sve"  # the widest in the table's order
    bare = host.cpu(str(tmp_path / "missing"))
    assert bare["model"] and "vector" not in bare
    assert host.describe(bare) == f"{bare['model']}, {bare['cores']} cores"


def test_every_run_manifest_records_the_cpu(tmp_path):
    ws = Workspace(tmp_path / "ws")
    with ws.start_run("synth", config={"x": 1}, seed=0, device="cpu") as run:
        run.complete(outputs={})
    manifest = json.loads((run.path / "manifest.json").read_text())
    assert manifest["cpu"] == json.loads(json.dumps(host.cpu()))

"""The build benchmark keeps working: the scale generator and every measurement run on the
small scale, once each. Nothing here looks at how long anything took."""

from __future__ import annotations

import json
import os
from pathlib import Path

from benchmarks import build_bench, image_options, scale


def test_plan_is_deterministic_and_a_dag() -> None:
    medium = scale.SCALES["medium"]
    needs = scale.plan_dag(medium)
    assert needs == scale.plan_dag(medium)
    assert len(needs) == medium.packages
    assert all(dep < index for index, deps in enumerate(needs) for dep in deps)
    seeds, spare = scale.plan_seeds(needs)
    assert spare and seeds and not set(seeds) & set(spare)
    # the seeds pull most of the repository, not all of it
    pulled = scale.closure(seeds, needs)
    assert 0.8 * medium.packages <= len(pulled) < medium.packages


def test_data_is_compressible_but_not_trivially() -> None:
    import random
    import zlib

    vocabulary = scale._vocabulary(scale.SCALES["small"])
    data = scale.data_bytes(random.Random(7), 200_000, vocabulary)
    assert len(data) == 200_000
    ratio = len(data) / len(zlib.compress(data, 6))
    assert 1.5 < ratio < 6


def test_ratios_and_targets() -> None:
    got = build_bench.ratios(
        {"noop": 1.0, "list": 1.0, "cold": 10.0, "add_seed": 2.0, "baseline": 5.0, "floor": 4.0}
    )
    assert got["noop_vs_list"] == {"ratio": 1.0, "limit": 1.5, "met": True}
    assert got["add_seed_vs_cold"]["met"] is True
    assert got["cold_vs_baseline"] == {"ratio": 2.0, "limit": 0.8, "met": False}
    assert got["cold_vs_floor"]["ratio"] == 2.5
    assert "cold_vs_fedora" not in got  # no fedora figure, no ratio


def test_tar_members_drops_the_end_of_archive(tmp_path: Path) -> None:
    import io
    import tarfile

    def archive(*names: str) -> bytes:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in names:
                data = (name * 300).encode()  # not a whole number of blocks
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            folder = tarfile.TarInfo("dir")
            folder.type = tarfile.DIRTYPE
            tar.addfile(folder)
        return out.getvalue()

    first, second = archive("a", "b" * 120), archive("c")  # a long name takes a pax header
    joined = bytes(build_bench.tar_members(first)) + bytes(build_bench.tar_members(second))
    assert len(joined) % 512 == 0 and len(joined) < len(first) + len(second)
    with tarfile.open(fileobj=io.BytesIO(joined + bytes(1024))) as tar:
        assert tar.getnames() == ["a", "b" * 120, "dir", "c", "dir"]


def test_small_benchmark_runs(tmp_path: Path, privileged: None) -> None:
    generated = scale.generate(scale.SCALES["small"], cache=tmp_path / "cache")
    again = scale.generate(scale.SCALES["small"], cache=tmp_path / "cache")
    assert again == generated  # cached: the second call builds nothing
    assert generated.stats["packages"] == scale.SCALES["small"].packages
    assert generated.base_rpms and all(p.is_file() for p in generated.base_rpms)

    doc = build_bench.run_benchmark(
        scale.SCALES["small"],
        cold_runs=1,
        quick_runs=1,
        workdir=tmp_path / "work",
        cache_dir=tmp_path / "cache",
        profile=tmp_path / "profile",
        settle_seconds=0,
        rss=True,
    )
    json.dumps(doc)  # the results document is JSON
    assert set(doc["figures"]) == {*build_bench.FEXSTACK_SCENARIOS, "baseline", "fedora", "floor"}
    assert all(len(f["runs"]) == 1 for f in doc["figures"].values())
    assert set(doc["ratios"]) == set(build_bench.TARGETS)
    assert "image:bench" in doc["figures"]["cold"]["tasks_median"]
    # the three contenders built the same tree
    files = doc["fexstack_tree"]["files"]
    assert doc["baseline_tree"]["files"] == files == doc["floor_tree"]["files"]
    assert doc["fedora_tree"] == doc["floor_tree"]  # the recipe's image holds the same tree
    # the whole process tree's peak: more than the doit process alone could be, far below 1 GiB
    assert 20 * 2**20 < doc["figures"]["cold"]["peak_rss_bytes"] < 2**30
    assert 0 < doc["figures"]["cold"]["peak_pss_bytes"] <= doc["figures"]["cold"]["peak_rss_bytes"]
    assert doc["peak_rss"]["met"] is True
    assert doc["ratios"]["cold_vs_faster_baseline"]["ratio"] > 0
    assert doc["machine"]["cores"] >= 1
    assert doc["settle_seconds"] == 0
    assert Path(doc["profiles"]["cold"]).is_file()
    print(build_bench.render(doc))


def test_image_options_runs(tmp_path: Path, privileged: None) -> None:
    tree = tmp_path / "tree"
    for i in range(40):
        path = tree / f"usr/share/t/{i % 4}/f{i}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"file {i}\n".encode() * (i + 1))
    for path in [tree, *tree.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
        os.utime(path, ns=(0, 0))  # a staged tree's mtimes are 0
    out = tmp_path / "options.json"
    assert image_options.main([str(tree), "--runs", "1", "--scratch", str(tmp_path),
                               "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["files"] == 40
    figures = doc["figures"]
    assert {"mkfs_workers_2", "scan_tree", "scan_tree_known", "readback_mount",
            "build_image_mount", "build_image_mount_known"} <= set(figures)
    assert all(len(f["runs"]) == 1 for f in figures.values())
    assert doc["ratios_to_mkfs_workers_2"]["mkfs_workers_2"] == 1.0
    assert not list(tmp_path.glob("fexstack-image-options.*"))  # its scratch folder is gone


def test_tree_memory_splits_the_pages_a_fork_shares() -> None:
    """Summed RSS counts a page a forked child shares with its parent twice; PSS once."""
    import subprocess
    import sys

    size = 96 * 2**20
    program = f"""
import os, sys, time
data = bytearray(os.urandom(1024)) * ({size} // 1024)  # every page touched
if os.fork() == 0:
    time.sleep(60)
    os._exit(0)
print("ready", flush=True)
time.sleep(60)
"""
    proc = subprocess.Popen(
        [sys.executable, "-c", program], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        rss, pss = build_bench._tree_memory(proc.pid)
        assert rss > 2 * size  # the parent's and the child's copy of the same pages
        assert size < pss < 1.5 * size  # the shared pages once
    finally:
        os.killpg(proc.pid, 9)  # the child and its fork
        proc.wait()

"""Lesson 00 (welcome and setup): seeding, device choice and the environment check, and the plumbing every
stage shares: atomic safetensors files and checksums, small statistics helpers.

Modules: ``assets``, ``environment``, ``lessons``, ``safefile``.
"""

from minillm.utils.assets import (
    ASSETS_DIR,
    SHIPPED_RESULTS,
    asset_path,
    bench_result,
)
from minillm.utils.environment import (
    DEVICE_ENV_VAR,
    MAX_SEED,
    MIN_TORCH,
    DoctorReport,
    auto_device,
    check_seed,
    cpu_name,
    doctor,
    ensure_writable_dir,
    ensure_writable_file,
    git_commit,
    load_average,
    machine_facts,
    measure_matmul_gflops,
    seed_everything,
)
from minillm.utils.lessons import (
    Lesson,
    lessons,
)
from minillm.utils.safefile import (
    DTYPES,
    MANIFEST_NAME,
    MAX_HEADER_BYTES,
    SafetensorsFormatError,
    TensorInfo,
    check_file,
    dedup_tied,
    encode_file,
    load_file,
    read_header,
    save_file,
    sha256_file,
    verify_manifest,
    write_manifest,
)

__all__ = [
    "ASSETS_DIR",
    "DEVICE_ENV_VAR",
    "DTYPES",
    "DoctorReport",
    "Lesson",
    "MANIFEST_NAME",
    "MAX_HEADER_BYTES",
    "MAX_SEED",
    "MIN_TORCH",
    "SHIPPED_RESULTS",
    "SafetensorsFormatError",
    "TensorInfo",
    "asset_path",
    "auto_device",
    "bench_result",
    "check_file",
    "check_seed",
    "cpu_name",
    "dedup_tied",
    "doctor",
    "encode_file",
    "ensure_writable_dir",
    "ensure_writable_file",
    "lessons",
    "git_commit",
    "load_average",
    "load_file",
    "machine_facts",
    "measure_matmul_gflops",
    "read_header",
    "save_file",
    "seed_everything",
    "sha256_file",
    "verify_manifest",
    "write_manifest",
]

"""Loading a trained model from any bytes (hypothesis): a checkpoint file or an export directory
that is not what train.py or the exporter wrote is refused with one UserError, or, where the damage
only changes values that are plain data (a weight, a number), loaded; never another exception.
Reading is `torch.load(weights_only=True)`, so no file runs code (tests/e2e/test_security.py)."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from empathic_lora.errors import UserError
from empathic_lora.export.exporter import export
from empathic_lora.lm import checkpoint_file
from empathic_lora.session import trained_model

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def mutations(size: int, head: int) -> st.SearchStrategy:
    """Byte edits of a file of `size` bytes, most within its first `head` bytes (a checkpoint's
    pickle, a manifest), or a truncation: a list of (offset, byte), or the length it is cut to."""
    offset = st.integers(0, min(head, size) - 1) | st.integers(0, size - 1)
    return st.lists(st.tuples(offset, st.integers(0, 255)), min_size=1, max_size=8) | st.integers(0, size - 1)


def mutate(data: bytes, edit: list[tuple[int, int]] | int) -> bytes:
    if isinstance(edit, int):
        return data[:edit]
    changed = bytearray(data)
    for offset, value in edit:
        changed[offset] = value
    return bytes(changed)


def load_or_refuse(path: Path) -> None:
    """`trained_model.load` either loads or raises one UserError line; anything else propagates."""
    try:
        loaded = trained_model.load(path, device="cpu")
    except UserError as error:
        assert str(error) and "Traceback" not in str(error)
        return
    assert loaded.model is not None and loaded.tokenizer is not None


@pytest.fixture(scope="module")
def checkpoint_bytes(tiny_ckpt: Path) -> bytes:
    return tiny_ckpt.read_bytes()


@pytest.fixture
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as directory:
        yield Path(directory)


def test_any_bytes_are_refused_in_one_line(scratch: Path) -> None:
    path = scratch / "any.ckpt"

    @PROPERTY
    @given(content=st.binary(max_size=4096) | st.binary(max_size=64).map(lambda b: b"PK\x03\x04" + b))
    def check(content: bytes) -> None:
        path.write_bytes(content)
        for load in (checkpoint_file.read, lambda p: trained_model.load(p, device="cpu")):
            with pytest.raises(UserError, match="checkpoint|not an empathic_lora"):
                load(path)

    check()


def test_a_mutated_checkpoint_is_read_or_refused(checkpoint_bytes: bytes, scratch: Path) -> None:
    path = scratch / "mutated.ckpt"

    @PROPERTY
    @given(edit=mutations(len(checkpoint_bytes), head=16_000))
    def check(edit: list[tuple[int, int]] | int) -> None:
        path.write_bytes(mutate(checkpoint_bytes, edit))
        try:
            checkpoint = checkpoint_file.read(path)
        except UserError:
            return
        assert isinstance(checkpoint[checkpoint_file.META_KEY], dict)

    check()


@PROPERTY
@given(edit=mutations(2_000_000, head=16_000))
def test_a_mutated_checkpoint_loads_or_is_refused(tiny_ckpt: Path, edit: list[tuple[int, int]] | int) -> None:
    data = tiny_ckpt.read_bytes()
    edit = [(offset % len(data), value) for offset, value in edit] if isinstance(edit, list) else edit % len(data)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "mutated.ckpt"
        path.write_bytes(mutate(data, edit))
        load_or_refuse(path)


@pytest.fixture(scope="module")
def exported(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(str(tiny_ckpt), str(tmp_path_factory.mktemp("export") / "adapter"))


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=8)
FILES = [checkpoint_file.EXPORT_META, checkpoint_file.ADAPTER_CONFIG, checkpoint_file.ADAPTER_WEIGHTS]


@PROPERTY
# Found by this property: each raised TypeError or AttributeError instead of a UserError.
@example(name=checkpoint_file.EXPORT_META, edit=0, key="base", value=None, as_json=True)
@example(name=checkpoint_file.EXPORT_META, edit=0, key="base", value={"base_model": "builtin:tiny-gpt2"}, as_json=True)
@example(name=checkpoint_file.ADAPTER_CONFIG, edit=0, key="corda_config", value=[], as_json=True)
@example(name=checkpoint_file.ADAPTER_CONFIG, edit=0, key="monteclora_config", value=1, as_json=True)
@example(name=checkpoint_file.ADAPTER_CONFIG, edit=0, key="base_model_name_or_path", value=-5, as_json=True)
@given(name=st.sampled_from(FILES), edit=mutations(2_000_000, head=4_000), key=st.text(max_size=12), value=JSON,
       as_json=st.booleans())
def test_a_mutated_export_loads_or_is_refused(exported: Path, name: str, edit, key: str, value, as_json: bool) -> None:
    with tempfile.TemporaryDirectory() as directory:
        copy = Path(shutil.copytree(exported, Path(directory) / "export"))
        target = copy / name
        data = target.read_bytes()
        if as_json and name != checkpoint_file.ADAPTER_WEIGHTS:
            document = json.loads(data)
            paths = [None, *document]  # the whole document, or one of its keys
            chosen = key if key in document else paths[len(key) % len(paths)]
            document = value if chosen is None else {**document, chosen: value}
            target.write_text(json.dumps(document), encoding="utf-8")
        else:
            edit = [(offset % len(data), byte) for offset, byte in edit] if isinstance(edit, list) else edit % len(data)
            target.write_bytes(mutate(data, edit))
        load_or_refuse(copy)

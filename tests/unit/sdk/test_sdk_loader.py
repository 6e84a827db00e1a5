"""Loading a folder of functions: every module imported, errors naming file and line, names unique."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nango.sdk.loader import BundleLoadError, load_folder, module_names, unload_folder

MODELS = "from nango.sdk import Model\n\nclass Contact(Model):\n    id: str\n    name: str\n"
SYNC = (
    "from models import Contact\nfrom nango.sdk import sync\n\n"
    "@sync(description='d', frequency='every hour', models=[Contact])\n"
    "async def contacts(nango):\n    pass\n"
)


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "crm"
    root.mkdir()
    yield root
    unload_folder(root)


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_every_module_is_imported(folder: Path) -> None:
    write(folder, {"models.py": MODELS, "syncs/contacts.py": SYNC, "syncs/__pycache__/x.py": "raise SystemExit"})
    assert module_names(folder) == ["models", "syncs.contacts"]
    (definition,) = load_folder(folder)
    assert (definition.name, definition.module, definition.attribute) == ("contacts", "syncs.contacts", "contacts")


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"a.py": "def broken(:\n"}, r"a\.py, line 1: SyntaxError"),
        ({"a.py": "x = 1\ny = undefined_name\n"}, r"a\.py, line 2: NameError: name 'undefined_name'"),
        (
            {"models.py": MODELS, "a.py": SYNC.replace("every hour", "every fortnight")},
            r"a\.py, line 4: DefinitionError: .*invalid frequency 'every fortnight'",
        ),
        (
            {
                "a.py": "from nango.sdk import Model, sync\nclass M(Model):\n    name: str\n"
                "@sync(description='d', frequency='1h', models=[M])\nasync def f(nango):\n    pass\n"
            },
            r"a\.py, line 4: DefinitionError: model M has no `id` field",
        ),
        (
            {
                "a.py": "from nango.sdk import action\n@action(description='d', name='bad name')\n"
                "async def f(nango):\n    pass\n"
            },
            r"a\.py, line 2: DefinitionError: invalid function name 'bad name'",
        ),
        ({"my-file.py": ""}, "must be Python identifiers"),
        ({"json.py": ""}, "'json' has the name of an installed module"),
    ],
)
def test_a_folder_that_does_not_load_says_where(folder: Path, files: dict[str, str], message: str) -> None:
    write(folder, files)
    with pytest.raises(BundleLoadError, match=message):
        load_folder(folder)


def test_two_functions_with_one_name_are_refused(folder: Path) -> None:
    action = "from nango.sdk import action\n@action(description='d', name='same')\nasync def {n}(nango):\n    pass\n"
    write(folder, {"a.py": action.format(n="one"), "b.py": action.format(n="two")})
    with pytest.raises(BundleLoadError, match=r"two functions are named 'same' \(a\.one and b\.two\)"):
        load_folder(folder)

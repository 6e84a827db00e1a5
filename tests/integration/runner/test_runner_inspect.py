"""InspectBundle: a bundle imported in a throwaway worker, described function by function, and bad
bundles refused with the file, line and reason."""

from __future__ import annotations

import pytest
from conftest import BUNDLE, Platform, zip_files

from nango.errors import InvalidRequest
from nango.runner.client import FunctionType

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_a_good_bundle_is_described(platform: Platform) -> None:
    specs = {s.name: s for s in await platform.runner.inspect_bundle(zip_files(BUNDLE), platform.integration)}
    assert set(specs) >= {"contacts", "create_contact", "refuse", "crash", "sleepy"}
    contacts = specs["contacts"]
    assert (contacts.type, contacts.frequency, contacts.track_deletes, contacts.auto_start) == (
        FunctionType.SYNC,
        "every hour",
        True,
        True,
    )
    assert (contacts.module, contacts.attribute, contacts.models) == ("contacts", "contacts", ("Contact",))
    assert contacts.models_json_schema["Contact"]["required"] == ["id", "name"]
    create = specs["create_contact"]
    assert create.type is FunctionType.ACTION
    assert create.input_json_schema is not None
    assert create.input_json_schema["title"] == "NewContact"
    assert create.output_json_schema is not None
    assert create.output_json_schema["title"] == "Contact"


async def test_an_on_event_function_and_nested_folders(platform: Platform) -> None:
    files = {
        "events/welcome.py": (
            "from nango.sdk import on_event\n\n"
            "@on_event('post-connection-creation', description='Say hi', name='welcome-new')\n"
            "async def welcome(nango):\n    await nango.log('hi')\n"
        ),
    }
    (spec,) = await platform.runner.inspect_bundle(zip_files(files))
    assert (spec.name, spec.type, spec.event, spec.module) == (
        "welcome-new",
        FunctionType.ON_EVENT,
        "post-connection-creation",
        "events.welcome",
    )


SYNC_HEAD = "from nango.sdk import Model, sync, action\n\nclass Contact(Model):\n    id: str\n\n"


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"a.py": "def broken(:\n    pass\n"}, r"a\.py, line 1: SyntaxError"),
        ({"lib/b.py": "import nowhere_to_be_found\n"}, r"lib/b\.py, line 1: ModuleNotFoundError"),
        (
            {
                "a.py": "from nango.sdk import Model, sync\n\nclass Row(Model):\n    name: str\n\n"
                "@sync(description='d', frequency='every hour', models=[Row])\nasync def rows(nango):\n    pass\n"
            },
            r"a\.py, line 6: DefinitionError: model Row has no `id` field",
        ),
        (
            {
                "a.py": SYNC_HEAD + "@sync(description='d', frequency='every 3 weeks ago', models=[Contact])\n"
                "async def c(nango):\n    pass\n"
            },
            r"a\.py, line 6: DefinitionError: .*invalid frequency",
        ),
        (
            {"a.py": SYNC_HEAD + "@action(description='d', name='no/slash')\nasync def c(nango):\n    pass\n"},
            r"invalid function name 'no/slash'",
        ),
        (
            {
                "a.py": SYNC_HEAD + "@action(description='d')\nasync def same(nango):\n    pass\n",
                "b.py": "from nango.sdk import action\n@action(description='d')\nasync def same(nango):\n    pass\n",
            },
            r"two functions are named 'same'",
        ),
        ({"a.py": "X = 1\n"}, "declares no function"),
        ({"../escape.py": "X = 1\n"}, "outside its folder"),
    ],
)
async def test_a_bad_bundle_is_refused_with_where_and_why(
    platform: Platform, files: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        await platform.runner.inspect_bundle(zip_files(files), platform.integration)


async def test_a_bundle_that_hangs_or_is_not_a_zip(platform: Platform) -> None:
    with pytest.raises(InvalidRequest, match="not a zip"):
        await platform.runner.inspect_bundle(b"PK not really", platform.integration)
    hog = {"a.py": "blob = bytearray(2 * 1024 ** 3)\n"}
    with pytest.raises(InvalidRequest, match="exceeded the memory limit"):
        await platform.runner.inspect_bundle(zip_files(hog), platform.integration)
    spin = {"a.py": "while True:\n    pass\n"}
    with pytest.raises(InvalidRequest, match="did not finish importing within 3 s"):
        await platform.runner.inspect_bundle(zip_files(spin), platform.integration)
    assert (await platform.runner.inspect_bundle(zip_files(BUNDLE)))[0].name

"""`nango init [DIR]`: a folder of functions to start from (one integration, a sync and an action)."""

from __future__ import annotations

from pathlib import Path

MODELS = '''"""The records and payloads of this integration's functions."""

from nango.sdk import Model


class Contact(Model):
    id: str
    name: str


class NewContact(Model):
    name: str
'''

SYNC = """from nango.sdk import sync

from models import Contact


@sync(description="Contacts", frequency="every hour", models=[Contact], track_deletes=True)
async def contacts(nango):
    async for page in nango.paginate(endpoint="/contacts"):  # the provider's pagination by default
        await nango.batch_save([Contact(id=c["id"], name=c["name"]) for c in page], "Contact")
"""

ACTION = """from nango.sdk import action

from models import Contact, NewContact


@action(description="Create a contact", input=NewContact, output=Contact)
async def create_contact(nango, input: NewContact) -> Contact:
    r = await nango.post(endpoint="/contacts", data=input.model_dump())
    return Contact(**r.json())
"""

FILES = {"models.py": MODELS, "contacts.py": SYNC, "create_contact.py": ACTION}


def init(directory: Path, integration: str) -> int:
    """Write `<directory>/<integration>/`; refuses to overwrite an existing folder."""
    target = directory / integration
    if target.exists():
        print(f"nango init: {target} already exists; nothing was written")
        return 1
    target.mkdir(parents=True)
    for name, text in FILES.items():
        (target / name).write_text(text, encoding="utf-8")
    print(f"Wrote {target}/ ({', '.join(FILES)}).")
    print("The folder name is the integration's id (its provider config key). Try a function with:")
    print(f"  nango dryrun contacts <connection-id> --integration {integration} --dir {directory}")
    return 0


__all__ = ["init"]

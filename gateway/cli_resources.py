"""`gateway resources list|set|delete`: registered resources from the command line.

The same rules as the admin API (`/v1/admin/resources`): a type the policy declares, an id a
permission can name (`name:<id>`), a printable name; every change is audited as the CLI's.
Registered resources give stores their names in the pickers; a store is offered there
whether or not it is registered, whenever the user holds store permissions on it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from gateway.api.schemas import resource_ref, resource_request
from gateway.errors import NotFound
from gateway.services import Services
from gateway.store.base import Audit, Resource


def add_parser(
    sub: argparse._SubParsersAction[Any], parser_class: type[argparse.ArgumentParser]
) -> None:
    resources = sub.add_parser("resources", help="manage registered resources").add_subparsers(
        dest="action", required=True, parser_class=parser_class
    )
    listing = resources.add_parser("list", help="list registered resources")
    listing.add_argument("--type", help="only this resource type, e.g. store")
    put = resources.add_parser("set", help="register a resource, or rename it")
    put.add_argument("type", help="a resource type the policy declares, e.g. store")
    put.add_argument("id", help="the id permissions name it by (`name:<id>`)")
    put.add_argument("name", help="the name pickers show")
    delete = resources.add_parser("delete", help="forget a registered resource")
    delete.add_argument("type")
    delete.add_argument("id")


async def run(services: Services, args: argparse.Namespace, say: Callable[[str], None]) -> None:
    types = services.policy.catalog.resource_types
    if args.action == "list":
        if args.type is not None:
            resource_ref(args.type, "x", types)  # an unknown type is an error, not silence
        for r in await services.store.list_resources(args.type):
            say(f"{r.type}  {r.id}  {r.name}")
        return
    type_, id_ = resource_ref(args.type, args.id, types)
    target = f"resource:{type_}/{id_}"
    if args.action == "set":
        name = resource_request({"name": args.name})
        await services.store.put_resource(
            Resource(type_, id_, name), Audit("cli", "resource.put", target, {"name": name})
        )
        say(f"{type_} {id_} is named {name!r}")
    elif not await services.store.delete_resource(
        type_, id_, Audit("cli", "resource.delete", target)
    ):
        raise NotFound(f"no {type_} {id_} is registered", code="resource-not-found")
    else:
        say(f"forgot {type_} {id_}")

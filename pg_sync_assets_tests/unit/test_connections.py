"""Named connections and the Dagster-facing keys of a table entry: parsing and checks."""

from __future__ import annotations

import dataclasses

import pytest

from pg_sync_assets.config import parse_project
from pg_sync_assets.connections import Connection, EnvRef
from pg_sync_assets.engine import ConfigError
from pg_sync_assets.project import Retries

TWO_SOURCES = {
    "connections": {
        "shop": {"url": {"env": "SHOP_URL"}},
        "billing": {"host": "db.internal", "port": {"env": "BILLING_PORT"}, "dbname": "billing",
                    "user": "loader", "password": {"env": "BILLING_PASSWORD"}, "sslmode": "require"},
        "warehouse": {"url": "postgresql://loader@wh.internal:5432/warehouse"},
    },
    "defaults": {"target_connection": "warehouse"},
    "tables": [
        {"source": "public.orders", "source_connection": "shop", "target": "shop.orders"},
        {"source": "public.orders", "source_connection": "billing", "target": "billing.orders",
         "key_prefix": "billing"},
    ],
}


def _error(document: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_project(document, "t.yaml")
    return str(caught.value)


def test_connections_are_parsed_with_env_references_kept_unread():
    project = parse_project(TWO_SOURCES, "t.yaml")
    assert project.connections["billing"] == Connection(
        "billing", host="db.internal", port=EnvRef("BILLING_PORT"), dbname="billing", user="loader",
        password=EnvRef("BILLING_PASSWORD"), sslmode="require")
    assert [(e.source_connection, e.target_connection, e.key_path) for e in project.tables] == [
        ("shop", "warehouse", ("orders",)), ("billing", "warehouse", ("billing", "orders"))]
    # Sources are read-only, in order of first use.
    assert project.used_connections() == {"shop": True, "warehouse": False, "billing": True}


def test_a_connection_resolves_its_environment_when_asked_and_names_a_missing_variable():
    billing = parse_project(TWO_SOURCES, "t.yaml").connections["billing"]
    dsn = billing.dsn({"BILLING_PORT": "6543", "BILLING_PASSWORD": "pa ss'word"})
    assert "port=6543" in dsn and "sslmode=require" in dsn and "dbname=billing" in dsn
    with pytest.raises(ConfigError) as caught:
        billing.dsn({"BILLING_PORT": "6543"})
    assert str(caught.value) == ("connection `billing`: `password` comes from the environment variable "
                                 "BILLING_PASSWORD, which is not set; set it")


def test_without_connections_source_and_target_come_from_the_usual_variables():
    project = parse_project({"tables": [{"source": "a.b"}]}, "t.yaml")
    assert project.connections["source"].url == EnvRef("PG_SYNC_SOURCE_URL")
    assert project.connections["target"].url == EnvRef("PG_SYNC_TARGET_URL")
    assert project.used_connections() == {"source": True, "target": False}


@pytest.mark.parametrize(
    ("connections", "expected"),
    [
        ({"shop": {"url": "postgresql://u:hunter2@h/db"}},
         "connection `shop`: the `url` holds a password; put the URL in an environment variable"),
        ({"shop": {"password": "hunter2"}},
         "connection `shop`: a password is never written in the table list"),
        ({"shop": {"host": "h", "pasword": "hunter2"}},
         "connection `shop`: unknown key(s) ['pasword']; allowed: ['url', 'host'"),
        ({"shop": {"port": "5432"}}, "connection `shop`: `port` must be a whole number above 0, got '5432'"),
        ({"shop": {"user": {"env": ""}}}, "connection `shop`: `user: {env: ...}` needs the name of an "
                                          "environment variable (letters, digits and _, not starting with "
                                          "a digit), got ''"),
        ({"shop": {"url": {"env": "1X"}}}, "`url: {env: ...}` needs the name of an environment variable"),
        ({"shop": {"url": {"evn": "X"}}}, "`url` must be a value or {env: VARIABLE_NAME}; the mapping has the "
                                          "key(s) ['evn'], and `env` is the only one allowed"),
        ({"shop": {"host": "h", "sslmode": "bogus"}},
         "connection `shop`: `sslmode` is 'bogus'; allowed: disable, allow, prefer, require, verify-ca, "
         "verify-full"),
        ({"shop": {"user": ["x"]}}, "connection `shop`: `user` must be a non-empty string or {env: VARIABLE_NAME}"),
        ({"shop-db": {"host": "h"}}, "connection `shop-db`: a connection name is a Dagster resource key"),
        ({"shop": {"url": "host=h port=5432 dbname='x"}}, "connection `shop`: the connection string for `shop` "
                                                           "is malformed"),
        ({"shop": None}, "connection `shop`: expected `url:` and/or the fields"),
    ],
)
def test_bad_connections_are_refused_naming_the_connection_never_the_secret(connections, expected):
    message = _error({"connections": connections, "tables": [{"source": "a.b"}]})
    assert expected in message
    assert "hunter2" not in message


def test_a_table_naming_an_undefined_connection_is_refused():
    message = _error({"connections": {"shop": {"host": "h"}},
                      "tables": [{"source": "a.b", "source_connection": "shopp"}]})
    assert message == ("`t.yaml`, table entry `b`: `source_connection` names `shopp`, which `connections:` does "
                       "not define (defined: shop; `source` and `target` exist by default)")


def test_a_connection_used_for_reading_and_writing_is_refused():
    message = _error({"connections": {"shop": {"host": "h"}}, "tables": [
        {"source": "a.b", "source_connection": "shop"},
        {"source": "a.c", "target_connection": "shop"},
    ]})
    assert message == ("`t.yaml`: connection `shop` is the source of `b` and the target of `c`; a connection "
                       "is used for reading or for writing, never both (sources are opened read-only): "
                       "define a second connection to that database")
    one_table = _error({"connections": {"shop": {"host": "h"}}, "tables": [
        {"source": "a.b", "source_connection": "shop", "target_connection": "shop"}]})
    assert "connection `shop` is the source of `b` and the target of `b`" in one_table


def test_same_table_names_from_two_sources_need_distinct_keys():
    document = {**TWO_SOURCES, "tables": [dict(t) for t in TWO_SOURCES["tables"]]}
    del document["tables"][1]["key_prefix"]
    assert "asset key `orders` is used by target `shop.orders` and by target `billing.orders`; set a " \
           "distinct `name:` or `key_prefix:`" in _error(document)


def test_the_same_target_table_on_two_target_connections_is_allowed():
    project = parse_project({
        "connections": {"wh1": {"host": "a"}, "wh2": {"host": "b"}},
        "tables": [{"source": "s.t", "target_connection": "wh1"},
                   {"source": "s.t", "target_connection": "wh2", "key_prefix": ["copy", "two"]}],
    }, "t.yaml")
    assert [e.ident for e in project.tables] == ["t", "copy__two__t"]


def test_presentation_keys_and_their_defaults():
    project = parse_project({
        "defaults": {"owners": ["team:data"], "tags": {"tier": "gold"}, "group": "warehouse/shop",
                     "retries": {"max_retries": 3, "delay": 5, "backoff": "linear"}},
        "tables": [
            {"source": "a.one"},
            {"source": "a.two", "owners": ["kim@example.com"], "tags": {"pii": ""}, "retries": 0,
             "description": "Orders, hourly."},
        ],
    }, "t.yaml")
    one, two = project.tables
    assert (one.owners, one.tags, one.group_name, one.retries) == (
        ("team:data",), (("tier", "gold"),), "warehouse/shop", Retries(3, 5.0, "linear"))
    assert (two.owners, two.tags, two.retries, two.description) == (
        ("kim@example.com",), (("pii", ""),), None, "Orders, hourly.")
    assert parse_project({"tables": [{"source": "a.b"}]}, "t.yaml").tables[0].group_name == "target"


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"owners": ["kim"]}, "`owners` must be email addresses or `team:NAME`, got ['kim']"),
        ({"tags": {"tier": "gold plated"}}, "tag `tier`: the value must be text of letters"),
        ({"tags": {"bad key!": "x"}}, "tag 'bad key!': a tag key is letters, digits"),
        ({"tags": ["tier"]}, "`tags` must be a mapping of tag -> value"),
        ({"group": "my group"}, "`group` must be letters A-Z, a-z, digits and _"),
        ({"key_prefix": ["ok", "not ok"]}, "`key_prefix` parts may use only letters A-Z"),
        ({"retries": -1}, "`retries`: `max_retries` must be a whole number from 0 to 10, got -1"),
        ({"retries": True}, "`retries` must be a number or a mapping with keys"),
        ({"retries": {"max_retries": 2, "backoff": "fibonacci"}}, "`backoff` must be one of ['exponential', "),
        ({"retries": {"max_retries": 2, "delay": "soon"}}, "`retries`: `delay` must be seconds from 0 to 3600"),
        ({"retries": {"tries": 2}}, "`retries`: unknown key(s) ['tries']"),
    ],
)
def test_bad_presentation_keys_name_the_entry(entry, expected):
    message = _error({"tables": [{"source": "a.b", **entry}]})
    assert message.startswith("`t.yaml`, table entry 1 (`a.b`): ")
    assert expected in message


def test_a_list_name_prefixes_every_job_and_is_checked():
    project = parse_project({"name": "shop", "tables": [{"source": "a.b"}]}, "t.yaml")
    assert project.name == "shop" and project.tables[0].list_name == "shop"
    assert "`name` prefixes job and schedule names" in _error({"name": "shop-1", "tables": [{"source": "a.b"}]})


def test_code_version_follows_what_the_sync_does_and_nothing_else():
    def version(**changes):
        entry = {"source": "a.b", "mode": "merge", **changes}
        return parse_project({"tables": [entry]}, "t.yaml").tables[0].code_version

    base = version()
    assert base == version() and len(base) == 12
    assert version(description="x", owners=["team:a"], tags={"a": "b"}, retries=2, group="g") == base
    changed = [version(where="id > 0"), version(mode="full_refresh"), version(verify=False),
               version(primary_key=["id"]), version(delete_missing=True), version(lock_timeout=5)]
    assert base not in changed and len(set(changed)) == len(changed)
    moved = parse_project({"connections": {"other": {"host": "h"}},
                           "tables": [{"source": "a.b", "mode": "merge", "source_connection": "other"}]},
                          "t.yaml").tables[0]
    assert moved.code_version != base
    assert dataclasses.replace(moved, description="y").code_version == moved.code_version


def test_each_connection_resource_says_which_database_and_whether_it_is_only_read():
    from dagster import AssetKey

    from pg_sync_assets import build_defs

    defs = build_defs({**TWO_SOURCES, "tables": [*TWO_SOURCES["tables"], {
        "name": "revenue", "query": "SELECT 1 AS id", "source_connection": "shop", "target": "shop.revenue",
        "primary_key": ["id"]}]})
    described = {name: r.get_resource_definition().description for name, r in defs.resources.items()}
    assert described["shop"] == ("PostgreSQL connection `shop` (url from $SHOP_URL); read-only: a source, "
                                 "only ever read (read-only sessions and transactions).")
    assert described["billing"].startswith("PostgreSQL connection `billing` (host db.internal, port from "
                                           "$BILLING_PORT, dbname billing, user loader, sslmode require)")
    assert "BILLING_PASSWORD" not in described["billing"]
    assert described["warehouse"] == (
        "PostgreSQL connection `warehouse` (loader@wh.internal:5432/warehouse); read-write: a target, written "
        "by the syncs (final tables and the sync_staging schema).")
    spec = defs.resolve_assets_def(AssetKey("revenue")).specs_by_key[AssetKey("revenue")]
    assert "```" not in spec.description  # the catalog shows it as plain text
    assert spec.metadata["query"].value == "SELECT 1 AS id"

"""The table list: what is accepted, and what every rejection says. No database."""

from __future__ import annotations

import datetime

import pytest

from pg_sync_assets.config import DEMO_CONFIG, ScheduleSettings, load_config, parse_config, parse_schedules
from pg_sync_assets.engine import ConfigError, Mode, TableRef
from pg_sync_assets.naming import derive_asset_name


def _one(**entry):
    return parse_config({"tables": [entry]}, source_name="tables.yaml")[0]


def test_defaults_target_to_source_and_name_to_the_table():
    spec = _one(source="shop.orders")
    assert (spec.name, spec.target, spec.source, spec.mode) == (
        "orders", TableRef("shop", "orders"), TableRef("shop", "orders"), Mode.FULL_REFRESH)
    assert spec.primary_key == () and spec.delete_missing is False


def test_source_splits_at_the_first_dot_and_keeps_names_literally():
    spec = _one(source='Raw Data.raw.data "v2"', target="분석.종목 마스터", name="stocks")
    assert spec.source == TableRef("Raw Data", 'raw.data "v2"')
    assert spec.target == TableRef("분석", "종목 마스터")


def test_a_bare_table_name_means_schema_public():
    assert _one(source="orders").source == TableRef("public", "orders")


def test_korean_target_names_get_a_romanized_asset_name():
    spec = _one(source="market.raw_data_인포맥스종목마스터")
    assert spec.name == "raw_data_inpomaekseujongmokmaseuteo"


def test_full_entry_is_read():
    spec = _one(name="o", source="a.b", target="c.d", primary_key=["x", "y"], mode="merge",
                where="x > 1", delete_missing=True, lock_timeout=30, lock_attempt_timeout=0.5)
    assert (spec.primary_key, spec.mode, spec.where, spec.delete_missing) == (
        ("x", "y"), Mode.MERGE, "x > 1", True)
    assert (spec.lock_timeout, spec.lock_attempt_timeout) == (30.0, 0.5)


def test_a_single_primary_key_column_may_be_a_string():
    assert _one(source="a.b", primary_key="id").primary_key == ("id",)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"source": "a.b", "primery_key": ["id"]},
         ["table entry 1 (`a.b`)", "unknown key(s) ['primery_key']", "allowed keys:", "'primary_key'"]),
        ({"target": "a.b"}, ["set exactly one of `source` (schema.table) or `query`"]),
        ({"source": "a.b", "query": "SELECT 1"}, ["set exactly one of `source`"]),
        ({"query": "SELECT 1 AS id"}, ["a `query` source needs a `target`"]),
        ({"source": "a.b", "mode": "upsert"},
         ["`mode` is 'upsert'; allowed: ['full_refresh', 'merge', 'incremental', 'cdc']"]),
        ({"query": "SELECT 1 AS id", "target": "a.b", "primary_key": ["id"], "mode": "cdc"},
         ["mode `cdc` applies the changes of a table (`source: schema.table`), not of a `query`"]),
        ({"source": "a.b", "mode": "cdc", "where": "id > 1"},
         ["mode `cdc` copies and follows the whole table", "use `merge` with `where`"]),
        ({"source": "a.b", "mode": "cdc", "schedule": "0 * * * *"},
         ["runs on its source connection's schedule `cdc_<connection>`", "remove its `schedule`"]),
        ({"source": "a.b", "mode": "incremental", "incremental_column": "u", "snapshot_group": "g"},
         ["`snapshot_group` applies to `full_refresh`, `merge` and `cdc` tables"]),
        ({"source": "a.b", "mode": "cdc", "cdc_max_lag_mb": 0},
         ["`cdc_max_lag_mb` must be a whole number of megabytes above 0, got 0"]),
        ({"source": "a.b", "mode": "incremental"}, ["`incremental_column` is required"]),
        ({"source": "a.b", "mode": "incremental", "incremental_column": "u", "timezone": "UTC"},
         ["['timezone'] apply to hourly partitions: set `partition_start`"]),
        ({"source": "a.b", "mode": "incremental", "incremental_column": "u", "partition_start": "2026-11-20"},
         ["`partition_start` must be an hourly partition key, on the hour, like '2026-11-20-00:00'"]),
        ({"source": "a.b", "mode": "incremental", "incremental_column": "u",
          "partition_start": "2026-11-20-00:00", "timezone": "Mars/Base"},
         ["`timezone` 'Mars/Base' is not a known IANA time zone"]),
        ({"source": "a.b", "mode": "incremental", "incremental_column": "u",
          "partition_start": "2026-11-20-00:00", "lookback": -1},
         ["`lookback` must be a whole number of hours from 0 to 168, got -1"]),
        ({"source": "a.b", "mode": "incremental", "incremental_column": "u",
          "partition_start": "2026-11-20-00:00", "schedule": "0 * * * *"},
         ["`schedule` does not apply to mode `incremental`"]),
        ({"source": "a.b", "mode": "incremental", "incremental_column": "u",
          "partition_start": datetime.date(2026, 11, 20)},
         ["`partition_start` must be an hourly partition key in quotes, like '2026-11-20-00:00'",
          "YAML read the unquoted value as the date 2026-11-20"]),
        ({"source": "a.b", "mode": "incremental", "incremental_column": "u",
          "partition_start": "2999-01-01-00:00", "timezone": "Asia/Seoul"},
         ["`partition_start` '2999-01-01-00:00' is in the future (Asia/Seoul)"]),
        ({"source": "a.b", "lookback": 2}, ["['lookback'] apply to mode `incremental` only"]),
        ({"source": "a.b", "schedule": "daily"}, ["`schedule` must be a valid 5-field cron string"]),
        # the holes: each was silently accepted or reported without file and entry
        ({"source": "a.b", "mode": "incremental", "incremental_column": "u",
          "partition_start": "2026-11-20-00:30"},
         ["table entry 1 (`a.b`)", "on the hour", "got '2026-11-20-00:30'"]),
        ({"source": "a.b", "mode": "merge", "incremental_column": "updated_at"},
         ["['incremental_column'] apply to mode `incremental` only, and this entry's mode is `merge`"]),
        ({"source": "a.b", "partition_start": "2026-11-20-00:00"},
         ["['partition_start'] apply to mode `incremental` only"]),
        ({"source": "a.b", "schedule": "61 * * * *"},
         ["table entry 1 (`a.b`)", "`schedule` must be a valid 5-field cron string", "got '61 * * * *'"]),
        ({"source": "a.b", "schedule": "0 2 * * * *"}, ["`schedule` must be a valid 5-field cron string"]),
        ({"source": "a.b", "lock_timeout": 0}, ["`lock_timeout` must be a number of seconds above 0"]),
        ({"source": "a.b", "lock_timeout": "10s"}, ["`lock_timeout` must be a number of seconds", "'10s'"]),
        ({"source": "a.b", "lock_timeout": 1, "lock_attempt_timeout": 5},
         ["`lock_attempt_timeout` (5 s) is longer than `lock_timeout` (1 s)"]),
        ({"source": "a.b", "where": "a = 1; DROP TABLE x"}, ["`where` holds a `;`", "got 'a = 1; DROP TABLE x'"]),
        ({"query": "SELECT 1 AS id", "target": "a.b", "mode": "incremental", "incremental_column": "u",
          "partition_start": "2026-11-20-00:00"}, ["mode `incremental` with a `query` source needs"]),
        ({"query": "SELECT 1 AS id", "target": "a.b", "mode": "merge"},
         ["mode `merge` with a `query` source needs `primary_key"]),
        ({"source": "a.b", "delete_missing": "yes please"}, ["`delete_missing` must be true or false"]),
        ({"source": "a.b", "delete_missing": True}, ["`delete_missing` applies to mode `merge` only"]),
        ({"source": "a.b", "name": "bad-name"},
         ["`name` 'bad-name' is not a valid Dagster asset name", "(e.g. `name: bad_name`)"]),
        ({"source": "a.日本"}, ["cannot derive an asset name from target table `a.日本`", "set `name:`"]),
        ({"source": "a."}, ["`source` must be `schema.table`"]),
        ({"source": 42}, ["`source` must be a non-empty string, got 42"]),
        ({"source": "a.b", "primary_key": []}, ["`primary_key` must be a list of column names"]),
        ({"source": "a.b", "primary_key": ["id", "id"]}, ["`primary_key` lists a column twice"]),
        ({"source": "a.b", "where": ""}, ["`where` must be a non-empty string"]),
    ],
)
def test_each_bad_entry_is_rejected_with_a_message_that_says_what_to_do(entry, expected):
    with pytest.raises(ConfigError) as caught:
        parse_config({"tables": [entry]}, source_name="tables.yaml")
    message = str(caught.value)
    assert message.startswith("`tables.yaml`")
    for part in expected:
        assert part in message


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (None, "expected a top-level `tables:` list"),
        ({"tables": {"a": 1}}, "expected a top-level `tables:` list"),
        ({"tables": []}, "`tables` is empty"),
        ({"tables": [{"source": "a.b"}], "default": {}}, "unknown top-level key(s) ['default']"),
        ({"tables": [{"source": "a.b"}], "defaults": {"mode": "merge"}},
         "`defaults`: unknown key(s) ['mode']; allowed: ['verify', 'lock_timeout', 'lock_attempt_timeout', "),
        ({"tables": ["a.b"]}, "table entry 1: expected a mapping of keys, got 'a.b'"),
    ],
)
def test_bad_documents_are_rejected(document, expected):
    with pytest.raises(ConfigError) as caught:
        parse_config(document, source_name="tables.yaml")
    assert expected in str(caught.value)


def test_two_entries_with_one_asset_name_are_rejected():
    with pytest.raises(ConfigError) as caught:
        parse_config({"tables": [{"source": "a.orders"}, {"source": "b.orders"}]}, "t.yaml")
    assert "asset key `orders` is used by target `a.orders` and by target `b.orders`; set a distinct " \
        "`name:` or `key_prefix:`" in str(caught.value)


def test_two_entries_writing_one_target_are_rejected():
    with pytest.raises(ConfigError) as caught:
        parse_config({"tables": [{"source": "a.x", "target": "t.x"},
                                 {"source": "b.x", "target": "t.x", "name": "x2"}]}, "t.yaml")
    assert "target table `t.x` is written by both `x` and `x2`" in str(caught.value)


def test_missing_and_malformed_files_name_the_path(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(caught.value) and "PG_SYNC_CONFIG" in str(caught.value)
    bad = tmp_path / "bad.yaml"
    bad.write_text("tables: [\n  - source: a.b\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(bad)
    assert "bad.yaml` is not valid YAML" in str(caught.value) and "line" in str(caught.value)


def test_the_bundled_demo_config_is_valid():
    names = [s.name for s in load_config(DEMO_CONFIG)]
    assert "inpomaekseujongmokmaseuteo" in names and len(names) == len(set(names))


@pytest.mark.parametrize(
    ("table", "name"),
    [("orders", "orders"), ("Mixed Case", "Mixed_Case"), ("order-items.v2", "order_items_v2"),
     ("인포맥스", "inpomaekseu"), ("café_crème", "cafe_creme"), ("2024_sales", "2024_sales"),
     ("한글 테이블", "hangeul_teibeul"), ("日本", None)],
)
def test_asset_names_derived_from_table_names(table, name):
    assert derive_asset_name(table) == name


def test_an_incremental_entry_is_read_with_its_defaults():
    spec = _one(source="shop.orders", mode="incremental", incremental_column="updated_at",
                partition_start="2026-11-20-00:00")
    assert (spec.mode, spec.incremental_column, spec.partition_start) == (
        Mode.INCREMENTAL, "updated_at", "2026-11-20-00:00")
    assert (spec.timezone, spec.lookback, spec.schedule) == ("UTC", 0, None)
    other = _one(source="a.b", mode="incremental", incremental_column="u", partition_start="2026-01-01-05:00",
                 timezone="Asia/Seoul", lookback=0)
    assert (other.timezone, other.lookback) == ("Asia/Seoul", 0)


def test_schedule_settings_and_their_errors():
    assert parse_schedules(None) == ScheduleSettings(running=False, minute_of_hour=7, daily_cron="0 2 * * *")
    assert parse_schedules({"running": True, "minute_of_hour": 15}).running
    for raw, expected in [({"running": "yes"}, "`running` must be true or false"),
                          ({"minute_of_hour": 60}, "`minute_of_hour` must be a whole number 0 to 59"),
                          ({"minute_of_hour": True}, "`minute_of_hour` must be a whole number 0 to 59, got True"),
                          ({"daily_cron": "0 25 * * *"}, "`daily_cron` must be a 5-field cron string"),
                          ({"daily_cron": "at two"}, "`daily_cron` must be a 5-field cron string"),
                          ({"hourly": True}, "unknown key(s) ['hourly']")]:
        with pytest.raises(ConfigError) as caught:
            parse_schedules(raw, "t.yaml")
        assert expected in str(caught.value)


def test_defaults_apply_to_every_entry_and_an_entry_overrides_them():
    first, second = parse_config({
        "defaults": {"lock_timeout": 30, "verify": False},
        "tables": [{"source": "a.b"}, {"source": "a.c", "lock_timeout": 5}],
    }, "t.yaml")
    assert (first.lock_timeout, first.verify) == (30.0, False)
    assert (second.lock_timeout, second.verify) == (5.0, False)


def test_a_key_given_twice_in_one_entry_is_refused_with_its_lines(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("tables:\n  - source: a.b\n    mode: merge\n    mode: full_refresh\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (f"`{path}`: the key `mode` is given twice in one mapping (lines 3 and 4); "
                                 "keep one")


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ([{"source": "a.b"}, {"name": "all", "source": "a.c", "schedule": "0 5 * * *"}],
         "table entry `all` (target `a.c`) would define the job/schedule `sync_all`, which pg_sync_assets "
         "itself already defines; set a different `name:` on this entry"),
        ([{"name": "daily", "source": "a.c", "mode": "incremental", "incremental_column": "u",
           "partition_start": "2026-11-20-00:00"}],
         "would define the job/schedule `sync_daily`, which pg_sync_assets itself already defines"),
        ([{"source": "a.reconcile_events_table"},
          {"source": "a.events", "mode": "incremental", "incremental_column": "u",
           "partition_start": "2026-11-20-00:00"}],
         "table entry `events` (target `a.events`) would define the op `reconcile_events_table`, which the "
         "asset of `reconcile_events_table` already defines"),
        ([{"name": "x", "source": "a.x", "schedule": "0 5 * * *"},
          {"name": "x_schedule", "source": "a.y", "mode": "incremental", "incremental_column": "u",
           "partition_start": "2026-11-20-00:00"}],
         "would define the job/schedule `sync_x_schedule`, which table `x` already defines"),
    ],
)
def test_names_that_would_collide_in_dagster_are_refused_naming_the_entry(entries, expected):
    with pytest.raises(ConfigError) as caught:
        parse_config({"tables": entries}, "t.yaml")
    assert str(caught.value).startswith("`t.yaml`: table entry")
    assert expected in str(caught.value)


def test_differential_is_auto_by_default_and_checked():
    entries = [{"source": "a.b"}, {"source": "a.c", "differential": "always"}]
    specs = parse_config({"defaults": {"differential": "never"}, "tables": entries}, "t.yaml")
    assert [s.differential for s in specs] == ["never", "always"]
    assert parse_config({"tables": [{"source": "a.b"}]}, "t.yaml")[0].differential == "auto"
    with pytest.raises(ConfigError) as caught:
        parse_config({"tables": [{"source": "a.b", "differential": True}]}, "t.yaml")
    assert str(caught.value) == ("`t.yaml`, table entry 1 (`a.b`): `differential` must be one of "
                                 "['auto', 'always', 'never'], got True")


def test_cdc_tables_share_their_connection_feed_and_run_on_its_schedule():
    from pg_sync_assets.config import parse_project

    project = parse_project(
        {
            "connections": {"shop": {"url": "postgresql://h/db", "cdc_slot": "shop_slot"}},
            "schedules": {"cdc_cron": "*/2 * * * *"},
            "defaults": {"cdc_max_lag_mb": 50},
            "tables": [
                {"source": "a.b", "mode": "cdc", "source_connection": "shop"},
                {"source": "a.c", "mode": "cdc", "source_connection": "shop", "cdc_max_lag_mb": 7},
                {"source": "a.d"},
            ],
        }
    )
    b, c, d = project.tables
    assert (b.feed.slot, b.feed.publication) == ("shop_slot", "pg_sync_shop")
    assert b.feed == c.feed and d.feed is None
    assert b.feed_members == (("target", TableRef("a", "b")), ("target", TableRef("a", "c")))
    assert (b.spec.cdc_max_lag_mb, c.spec.cdc_max_lag_mb) == (50, 7)
    assert project.schedules.cdc_cron == "*/2 * * * *"
    assert b.code_version == parse_project(
        {"connections": {"shop": {"url": "postgresql://h/db"}},
         "tables": [{"source": "a.b", "mode": "cdc", "source_connection": "shop"}]}
    ).tables[0].code_version  # the lag threshold decides a check, not the sync


@pytest.mark.parametrize("name", ["Shop", "shop-slot", "x" * 64, 5])
def test_a_slot_name_postgresql_refuses_is_refused_at_load(name):
    from pg_sync_assets.config import parse_project

    with pytest.raises(ConfigError, match="not a replication slot name PostgreSQL accepts"):
        parse_project({"connections": {"shop": {"url": "postgresql://h/db", "cdc_slot": name}},
                       "tables": [{"source": "a.b", "source_connection": "shop"}]})


def test_a_bad_cdc_cron_is_refused():
    with pytest.raises(ConfigError, match="`cdc_cron` must be a 5-field cron string"):
        parse_schedules({"cdc_cron": "every five minutes"})


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"automation_condition": "lazy"}, "`automation_condition` must be `eager` or `{on_cron: CRON}`"),
        ({"automation_condition": {"on_cron": "hourly"}}, "`automation_condition.on_cron` must be a 5-field cron"),
        ({"freshness": {"fail_window": "2 hours"}}, "`freshness.fail_window` must be a duration like `90m`"),
        ({"freshness": {"warn_window": "1h"}}, "`freshness` must be a mapping with `fail_window`"),
        ({"freshness": {"fail_window": "1h", "warn_window": "2h"}}, "`freshness.warn_window` must be shorter"),
    ],
)
def test_automation_and_freshness_errors_say_what_is_allowed(entry, expected):
    from pg_sync_assets.config import parse_project

    with pytest.raises(ConfigError, match="table entry 1") as caught:
        parse_project({"tables": [{"source": "a.b", **entry}]})
    assert expected in str(caught.value)


def test_automation_and_freshness_are_read():
    from datetime import timedelta

    from pg_sync_assets.config import parse_project

    project = parse_project({"defaults": {"freshness": {"fail_window": "1d"}},
                             "tables": [{"source": "a.b", "automation_condition": "eager"},
                                        {"source": "a.c", "automation_condition": {"on_cron": "*/10 * * * *"}}]})
    b, c = project.tables
    assert (b.automation.on_cron, c.automation.on_cron) == (None, "*/10 * * * *")
    assert b.freshness.fail_window == c.freshness.fail_window == timedelta(days=1)


def test_printed_commands_fit_where_the_definitions_load():
    from pg_sync_assets.launch import ANY_MODULE, DG_LAUNCH, MODULE

    config = '{"ops": {"orders": {"config": {"reconcile": true}}}}'
    assert DG_LAUNCH.materialize("orders", config) == f"`dg launch --assets orders --config-json '{config}'`"
    assert DG_LAUNCH.run_job("shop_reconcile_all") == "`dg launch --job shop_reconcile_all`"
    assert MODULE.run_job("reconcile_all") == "`dagster job execute -m pg_sync_assets.definitions -j reconcile_all`"
    assert "`dg launch --job x`" in ANY_MODULE.run_job("x") and "YOUR_DEFINITIONS_MODULE -j x`" in ANY_MODULE.run_job("x")


def test_the_table_uri_names_no_credential():
    from pg_sync_assets.connections import Connection
    from pg_sync_assets.locations import connection_location, location_metadata

    connection = Connection("w", url="postgresql://loader:pw@dwh.internal:6432/warehouse?sslmode=require")
    meta = location_metadata(connection_location(connection, {}), TableRef("분석", "주문 내역"))
    assert meta["dagster/table_name"] == "warehouse.분석.주문 내역"
    assert meta["dagster/uri"] == "postgresql://dwh.internal:6432/warehouse/%EB%B6%84%EC%84%9D/%EC%A3%BC%EB%AC%B8%20%EB%82%B4%EC%97%AD"
    assert "loader" not in meta["dagster/uri"] and "pw" not in meta["dagster/uri"]
    assert connection_location(Connection("w", url={"env": "UNSET_VAR"} and None), {}) is None


def test_a_snapshot_group_is_all_cdc_or_none():
    from pg_sync_assets.config import parse_project

    with pytest.raises(ConfigError, match="a group's tables are either all `cdc`"):
        parse_project({"tables": [{"source": "a.b", "mode": "cdc", "snapshot_group": "g"},
                                  {"source": "a.c", "snapshot_group": "g"}]})

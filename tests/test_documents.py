"""Document shops: the generator's MongoDB documents, read back by the extraction, on a real FerretDB server.

No Spark here: the extraction writes bronze with delta-rs, and bronze is read back with delta-rs.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from deltalake import DeltaTable

from core import shop_schema
from core.db import DocumentShopError, masked
from core.db import document_database as connect
from core.documents import DocumentShop, WrongType, converter, element_key, stable_key
from core.mapping import MappingError, SourceSchemaError, load_mapping
from demo_shop.existing import ShopExistsError
from demo_shop.generate_shop import generate_shop
from jobs import extract

RUN_DATE = date(2026, 11, 26)
CONF = Path(__file__).resolve().parent.parent / "conf"
CUSTOMERS = 200  # enough for the generator to plant every kind of bad row
SEED = 11


def configured(settings, data_dir: Path, shop_url: str, mapping: str = "auto"):
    return settings.model_copy(
        update={
            "data_dir": data_dir,
            "shop": settings.shop.model_copy(update={"url": shop_url}),
            "extract": settings.extract.model_copy(update={"mapping": mapping}),
        }
    )


def bronze(settings, table: str) -> list[dict]:
    rows = DeltaTable(str(settings.lake_dir / "bronze" / table)).to_pyarrow_table().to_pylist()
    return sorted(rows, key=lambda row: (row["id"] is None, row["id"] or 0))


def test_document_keys_are_stable_integers():
    from bson import ObjectId

    oid = ObjectId("65f1c0ffee00000000000001")
    assert stable_key(oid) == stable_key(ObjectId(str(oid))) and 0 <= stable_key(oid) < 2**63
    assert stable_key(oid) != stable_key(ObjectId("65f1c0ffee00000000000002"))
    assert stable_key(42) == 42 and stable_key(42.0) == 42 and stable_key("42") == 42
    key = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert stable_key(key) == stable_key(uuid.UUID(str(key))) != stable_key(oid)
    assert element_key(7, 0) != element_key(7, 1) and element_key(7, 0) == element_key(7, 0)
    for wrong in ("C-0042", True, 1.5, {"id": 1}, [1]):
        with pytest.raises(WrongType, match="integer, ObjectId or UUID key"):
            stable_key(wrong)


def test_a_shop_url_without_a_database_or_a_server_is_named_in_one_line(settings, tmp_path):
    assert masked("mongodb://reader:s3cret@mongo:27017/shop") == "mongodb://reader:***@mongo:27017/shop"
    with pytest.raises(
        DocumentShopError,
        match=r"^shop URL mongodb://127.0.0.1:1: names no database; expected "
        r"mongodb://host:port/<database>$",
    ):
        extract.run(RUN_DATE, configured(settings, tmp_path, "mongodb://127.0.0.1:1"), "no-database")
    with pytest.raises(
        DocumentShopError,
        match=r"^shop mongodb://reader:\*\*\*@127.0.0.1:1/shop\?serverSelectionTimeoutMS="
        r"300: cannot be read: 127.0.0.1:1: \[Errno 111\] Connection refused$",
    ):
        extract.run(
            RUN_DATE, configured(settings, tmp_path, "mongodb://reader:pw@127.0.0.1:1/shop?serverSelectionTimeoutMS=300"), "no-server"
        )
    assert not (tmp_path / "lake").exists()


def test_crm_doctor_checks_a_document_shop(ferretdb, tmp_path):
    from conftest import run_crm

    ferretdb.create_database("doctor")
    result = run_crm("doctor", "--quick", env={"CRM_DATA_DIR": str(tmp_path), "CRM_SHOP_URL": ferretdb.url("doctor")}, check=False)
    line = next(line for line in result.stdout.splitlines() if "shop database" in line)
    assert line.startswith("ok ") and f"{ferretdb.url('doctor')} answers (MongoDB protocol 7.0" in line, result.stdout


def test_amounts_may_be_decimal128():
    """MongoDB keeps exact amounts as Decimal128, which FerretDB 1.24 refuses to store: checked here, on the value."""
    from bson.decimal128 import Decimal128
    from sqlalchemy import Numeric

    assert converter(Numeric(12, 2))(Decimal128("19.90")) == 19.9
    with pytest.raises(WrongType, match="a number"):
        converter(Numeric(12, 2))("19.90")


def test_a_string_that_is_not_utf8_is_named_not_read():
    """A BSON string with bytes that are not UTF-8 (a server may store them; FerretDB refuses them: checked on
    the value) is decoded as the client does (U+FFFD) and refused as text, so clean can null the field."""
    import bson
    from bson.codec_options import CodecOptions
    from sqlalchemy import String

    from core.documents import _utf8

    raw = bson.encode({"firstName": "Jxe"}).replace(b"Jxe", b"J\xffe")
    value = bson.decode(raw, CodecOptions(unicode_decode_error_handler="replace"))["firstName"]
    with pytest.raises(WrongType, match="valid UTF-8 text"):
        _utf8(converter(String(100))(value))
    assert _utf8(converter(String(100))("Zoë 你好")) == "Zoë 你好"


@pytest.fixture(scope="module")
def two_shops(ferretdb, settings, tmp_path_factory):
    """The same seed as a SQLite shop and as MongoDB documents, each extracted into its own lake."""
    base = tmp_path_factory.mktemp("document-shops")
    ferretdb.create_database("documents")
    urls = {"sqlite": f"sqlite:///{base / 'shop.sqlite'}", "mongodb": ferretdb.url("documents")}
    runs, summaries, results = {}, {}, {}
    for kind, url in urls.items():
        summaries[kind] = generate_shop(url, customers=CUSTOMERS, seed=SEED, end_date=RUN_DATE, truth_dir=base / f"truth-{kind}")
        runs[kind] = configured(settings, base / f"data-{kind}", url)
        results[kind] = extract.run(RUN_DATE, runs[kind], f"run-{kind}")
    return runs, summaries, results


def test_the_documents_read_back_as_the_sql_shops_rows(two_shops):
    runs, summaries, results = two_shops
    left_out = summaries["mongodb"]["not_written"]
    assert left_out == {"order_items": summaries["sqlite"]["bad_rows"]["order_items"]["orphan"]}
    for name in shop_schema.SHOP_TABLES:
        sql, documents = bronze(runs["sqlite"], name), bronze(runs["mongodb"], name)
        assert results["mongodb"][name]["changed"] == len(documents) == summaries["mongodb"]["rows"][name], name
        assert len(documents) == len(sql) - left_out.get(name, 0), name
        by_id = {row["id"]: row for row in documents}
        compared = 0
        for row in sql:
            if row["id"] not in by_id:  # an order item of a deleted order: no document holds it
                continue
            other = by_id[row["id"]]
            for column in shop_schema.metadata.tables[name].columns:
                mine, theirs = row[column.name], other[column.name]
                if isinstance(column.type, shop_schema.DateTime) and mine is not None:
                    mine, theirs = datetime.fromisoformat(mine), datetime.fromisoformat(theirs)
                assert mine == theirs, (name, row["id"], column.name)
            assert other["_unreadable"] is None and other["_op"] == "U"
            compared += 1
        assert compared == len(documents), name
    # An embedded table is read from its parent's documents, once per document.
    assert results["mongodb"]["order_items"]["documents"] == results["mongodb"]["orders"]["documents"]


def test_the_watermarks_are_the_sql_shops_latest_past_updates(two_shops):
    """Taken from the documents read (a future-dated order does not count), they equal the SQL shop's."""
    runs, _, _ = two_shops

    def high(run) -> dict[str, datetime]:
        rows = DeltaTable(str(run.lake_dir / "bronze" / "_watermarks")).to_pyarrow_table().to_pylist()
        return {row["table"]: row["high_watermark"] for row in rows}

    documents, sql = high(runs["mongodb"]), high(runs["sqlite"])
    embedded = {"addresses": "customers", "order_items": "orders", "cart_items": "carts"}
    for name in shop_schema.SHOP_TABLES:  # an embedded table's watermark is its parent document's
        assert documents[name] == sql[embedded.get(name, name)], name
        assert documents[name] < datetime.now(documents[name].tzinfo)


def test_objectid_keys_missing_element_keys_and_wrong_types(ferretdb, settings, tmp_path):
    """A shop keyed by ObjectIds: references follow their documents, an item without `_id` gets one from its
    order, and values of the wrong type are nulled and named in `_unreadable` (clean quarantines the row)."""
    from bson import ObjectId

    ferretdb.create_database("objectids")
    url = ferretdb.url("objectids")
    generate_shop(url, customers=20, seed=3, end_date=RUN_DATE, truth_dir=tmp_path / "truth")
    customer, order, odd = ObjectId(), ObjectId(), ObjectId()
    stamp = datetime(2026, 11, 20, 10, 30)
    with connect(url) as shop:
        shop.customers.insert_one(
            {
                "_id": customer,
                "email": "oid@example.com",
                "createdAt": stamp,
                "updatedAt": stamp,
                "addresses": [{"line1": "1 Main St", "city": "Leeds", "isDefault": 1, "createdAt": stamp, "updatedAt": stamp}],
            }
        )
        shop.orders.insert_one(
            {
                "_id": order,
                "customerId": customer,
                "status": "paid",
                "totalAmount": 19.9,
                "currency": "CNY",
                "createdAt": stamp,
                "updatedAt": stamp,
                "items": [{"productId": 1, "quantity": 1, "unitPrice": 19.9, "createdAt": stamp, "updatedAt": stamp}],
            }
        )
        shop.orders.insert_one(
            {
                "_id": odd,
                "customerId": customer,
                "status": "paid",
                "totalAmount": "a lot",
                "currency": "CNY",
                "createdAt": "yesterday",
                "updatedAt": stamp,
                "items": [
                    {"_id": 9_000_001, "productId": {"sku": "X"}, "quantity": 2.5, "unitPrice": 1.0, "createdAt": stamp, "updatedAt": stamp}
                ],
            }
        )
    run = configured(settings, tmp_path / "data", url)
    extract.run(RUN_DATE, run, "oids")

    customers = {row["id"]: row for row in bronze(run, "customers")}
    assert customers[stable_key(customer)]["email"] == "oid@example.com"
    addresses = [row for row in bronze(run, "addresses") if row["customer_id"] == stable_key(customer)]
    assert [(row["id"], row["is_default"]) for row in addresses] == [(element_key(stable_key(customer), 0), True)]
    orders = {row["id"]: row for row in bronze(run, "orders")}
    assert orders[stable_key(order)]["customer_id"] == stable_key(customer)
    assert orders[stable_key(order)]["total_amount"] == Decimal("19.90") and orders[stable_key(order)]["_unreadable"] is None
    items = {row["id"]: row for row in bronze(run, "order_items")}
    assert items[element_key(stable_key(order), 0)]["order_id"] == stable_key(order)

    wrong = orders[stable_key(odd)]
    assert wrong["total_amount"] is None
    assert wrong["_unreadable"] == (
        "orders (collection orders): orders.total_amount (field totalAmount) = 'a lot': a str, expected a number"
    )
    assert wrong["created_at"] == "yesterday"  # text where a date belongs: clean quarantines it as invalid_value
    item = items[9_000_001]
    assert item["product_id"] is None and item["quantity"] is None
    assert item["_unreadable"] == (
        "order_items (collection orders, array items): order_items.product_id (field productId) = {'sku': 'X'}: "
        "a dict, expected an integer, ObjectId or UUID key; order_items.quantity (field quantity) = 2.5: "
        "a float, expected an integer"
    )


def test_the_mapping_is_checked_against_the_documents_before_anything_is_read(ferretdb, two_shops, settings, tmp_path):
    runs, _, _ = two_shops
    url = runs["mongodb"].shop.url
    raw = yaml.safe_load((CONF / "mappings" / "mongodb.yaml").read_text())
    raw["tables"]["orders"]["columns"]["created_at"] = "placedAt"
    raw["tables"]["reviews"]["source"] = "productReviews"
    path = tmp_path / "drifted.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SourceSchemaError) as error:
        DocumentShop(url, 100).check(load_mapping(path))
    message = str(error.value)
    assert "orders (collection orders): field placedAt is in none of the first" in message
    assert "needed for orders.created_at" in message
    assert "reviews (collection productReviews): collection productReviews is missing" in message
    assert not (tmp_path / "lake").exists()

    # An embedding mapping read against a SQL shop, and a parent field without an embedded array.
    with pytest.raises(SourceSchemaError, match="embeds tables.addresses in documents, which only a document shop"):
        extract.run(RUN_DATE, configured(settings, tmp_path / "sql", runs["sqlite"].shop.url, "mongodb"), "wrong-kind")
    raw = yaml.safe_load((CONF / "mappings" / "mongodb.yaml").read_text())
    del raw["tables"]["addresses"]["embedded"]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(MappingError, match=r"tables.addresses.columns.customer_id: \$parent._id reads a parent document"):
        load_mapping(path)


def test_fields_outside_the_mapping_are_carried_as_text_when_asked(ferretdb, settings, tmp_path):
    ferretdb.create_database("carried")
    url = ferretdb.url("carried")
    generate_shop(url, customers=10, seed=5, end_date=RUN_DATE, truth_dir=tmp_path / "truth")
    with connect(url) as shop:
        first = shop.customers.find_one(sort=[("_id", 1)])
        shop.customers.update_one({"_id": first["_id"]}, {"$set": {"loyalty": {"tier": "gold", "points": 1200}, "segment": "vip"}})
    raw = yaml.safe_load((CONF / "mappings" / "mongodb.yaml").read_text())
    raw["tables"]["customers"]["new_columns"] = "carry"
    (tmp_path / "conf-mapping.yaml").write_text(yaml.safe_dump(raw))
    run = configured(settings, tmp_path / "data", url, str(tmp_path / "conf-mapping.yaml"))
    extract.run(RUN_DATE, run, "carry")
    rows = {row["id"]: row for row in bronze(run, "customers")}
    assert rows[first["_id"]]["loyalty"] == '{"tier": "gold", "points": 1200}'
    assert rows[first["_id"]]["segment"] == "vip"
    assert "addresses" not in rows[first["_id"]]  # the embedded table's array is not an unknown field
    assert "loyalty" not in bronze(run, "addresses")[0]


def test_generating_into_a_filled_database_needs_replace(ferretdb, tmp_path):
    ferretdb.create_database("filled")
    url = ferretdb.url("filled")
    generate_shop(url, customers=5, seed=1, end_date=RUN_DATE, truth_dir=tmp_path / "truth")
    with pytest.raises(ShopExistsError, match="shop tables already hold rows"):
        generate_shop(url, customers=5, seed=2, end_date=RUN_DATE, truth_dir=tmp_path / "truth")
    summary = generate_shop(url, customers=5, seed=2, end_date=RUN_DATE, truth_dir=tmp_path / "truth", replace=True)
    with connect(url) as shop:
        assert shop.customers.count_documents({}) == summary["rows"]["customers"] == 5
        assert "updatedAt_1" in shop.orders.index_information()  # incremental reads filter on it

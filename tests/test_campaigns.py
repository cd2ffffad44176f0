"""Campaign audiences: files checked with errors naming the file and field; who is contacted, held out or
suppressed and why; a control group that never moves."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.campaigns import (
    BUCKETS,
    Campaign,
    CampaignError,
    Suppression,
    audiences,
    check_expressions,
    control_bucket,
    control_bucket_column,
    load_campaign,
    load_campaigns,
)

REPO_CAMPAIGNS = Path(__file__).resolve().parent.parent / "conf" / "campaigns"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_campaigns_load_in_priority_order():
    names = [campaign.name for campaign in load_campaigns(REPO_CAMPAIGNS)]
    assert names == ["win_back", "cart_reminder", "browse_abandonment", "vip", "new_customer_nurture"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "description: d\naudiance: frequency > 1\n",
            r"audiance: unknown field \(did you mean 'audience'\?\); expected one of description, audience,",
        ),
        ("description: d\n", r"audience: missing; who qualifies"),
        (
            "description: d\naudience: frequency > 1\nchannel: fax\n",
            r"channel: unknown channel 'fax'; expected one of email, sms, push, any \(got 'fax'\)",
        ),
        ("description: d\naudience: frequency > 1\ncontrol_share: 0.9\n", r"control_share: .*less than or equal to 0.5"),
        ("description: d\naudience: frequency > 1\nname: other\n", r"name: the campaign's name is its file's name"),
        ("- a list\n", r"expected a mapping of fields"),
    ],
)
def test_a_bad_campaign_file_names_the_file_and_the_field(tmp_path, text, message):
    path = write(tmp_path, "spring_sale", text)
    with pytest.raises(CampaignError, match=rf"^{path}: .*{message}"):
        load_campaign(path)


def test_a_campaign_file_name_must_be_a_plain_name(tmp_path):
    path = write(tmp_path, "Spring Sale", "description: d\naudience: frequency > 1\n")
    with pytest.raises(CampaignError, match=r"the file name 'Spring Sale' is the campaign's name"):
        load_campaign(path)


# ---- with Spark ----------------------------------------------------------------------------------------

VIEW = (
    "customer_id long, segment string, frequency long, recency_days int, clv_12m double, "
    "accepts_marketing boolean, has_email boolean, open_inquiries int, open_cart_value double"
)


def view_of(spark, rows):
    return spark.createDataFrame(rows, VIEW)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "audience",
            "segmnt = 'Lost'",
            r"audience: .*segmnt.*expected Spark SQL over the customer view's columns: "
            r"customer_id, segment,",
        ),
        ("audience", "frequency +", r"audience: .*(PARSE_SYNTAX_ERROR|Syntax error)"),
        ("audience", "clv_12m * 2", r"audience: 'clv_12m \* 2' is double, not a condition"),
        ("order_by", ["clv desc"], r"order_by\[0\]: .*clv"),
    ],
)
def test_an_expression_spark_cannot_read_names_the_file_and_the_field(spark, field, value, message):
    fields = {"description": "d", "audience": "frequency > 1", field: value}
    campaign = Campaign(name="spring_sale", **fields)
    with pytest.raises(CampaignError, match=rf"^conf/campaigns/spring_sale.yaml: {message}"):
        check_expressions(campaign, view_of(spark, []), "conf/campaigns/spring_sale.yaml")


def customer(customer_id, segment="At Risk", clv=100.0, consent=True, email=True, inquiries=0, cart=0.0):
    return (customer_id, segment, 3, 90, clv, consent, email, inquiries, cart)


def outcome(frame) -> dict[tuple[str, int], tuple[str, str | None]]:
    return {(row.campaign, row.customer_id): (row.audience_group, row.suppression_reason) for row in frame.collect()}


def test_each_qualifying_customer_is_contacted_held_out_or_suppressed_with_the_first_reason(spark):
    rows = [
        customer(1),
        customer(2, consent=False),
        customer(3, consent=None),
        customer(4, email=False),
        customer(5, inquiries=1),
        customer(6),
        customer(7, clv=300.0, cart=80.0),
        customer(8, clv=200.0),
        customer(9, clv=50.0),
        customer(10, segment="Champions", cart=60.0),
    ]
    win_back = Campaign(
        name="win_back",
        description="d",
        audience="segment = 'At Risk'",
        priority=1,
        order_by=["clv_12m desc"],
        max_audience=3,
        control_share=0.0,
    )
    cart = Campaign(name="cart_reminder", description="d", audience="open_cart_value >= 50", priority=2, channel="sms", control_share=0.0)
    recent = spark.createDataFrame([(6,)], "customer_id long")
    result = outcome(audiences(view_of(spark, rows), [win_back, cart], Suppression(contacted_recently=recent)))
    assert result == {
        ("win_back", 1): ("treatment", None),
        ("win_back", 2): ("suppressed", "unsubscribed"),
        ("win_back", 3): ("suppressed", "consent_unknown"),  # no recorded consent: not contacted, and not "unsubscribed"
        ("win_back", 4): ("suppressed", "no_email"),
        ("win_back", 5): ("suppressed", "open_inquiry"),
        ("win_back", 6): ("suppressed", "contacted_recently"),
        ("win_back", 7): ("treatment", None),  # clv 300, 200, 100 are the three the cap keeps
        ("win_back", 8): ("treatment", None),
        ("win_back", 9): ("suppressed", "audience_limit"),
        ("cart_reminder", 7): ("suppressed", "other_campaign"),  # win_back came first tonight
        ("cart_reminder", 10): ("treatment", None),  # an sms campaign needs no e-mail address
    }


def test_the_control_group_has_its_share_and_never_moves_when_customers_come_and_go(spark):
    campaign = Campaign(name="win_back", description="d", audience="true", control_share=0.2)
    first = outcome(
        audiences(
            view_of(spark, [customer(n) for n in range(1, 4001)]), [campaign], Suppression(spark.createDataFrame([], "customer_id long"))
        )
    )
    grown = outcome(
        audiences(
            view_of(spark, [customer(n) for n in range(2001, 6001)]), [campaign], Suppression(spark.createDataFrame([], "customer_id long"))
        )
    )
    control = sum(group == "control" for group, _ in first.values())
    assert 0.18 * 4000 < control < 0.22 * 4000
    # The customers of both nights keep their group; the group is the one the plain hash gives.
    for key in first.keys() & grown.keys():
        assert first[key] == grown[key]
        assert (first[key][0] == "control") == (control_bucket("win_back", key[1]) < 0.2 * BUCKETS)


def test_the_control_bucket_is_the_same_in_python_and_spark(spark):
    ids = [1, 2, 17, 123456789, 2**40 + 3]
    frame = spark.createDataFrame([(n,) for n in ids], "customer_id long")
    spark_buckets = [row.bucket for row in frame.select(control_bucket_column("vip").alias("bucket")).collect()]
    assert spark_buckets == [control_bucket("vip", n) for n in ids]
    assert len({control_bucket("vip", n) for n in range(1000)}) > 900  # spread out


@pytest.mark.parametrize(
    ("consent_when_missing", "expected"),
    [("unknown", ("suppressed", "consent_unknown")), ("granted", ("treatment", None)), ("denied", ("suppressed", "unsubscribed"))],
)
def test_a_customer_without_recorded_consent_is_treated_as_configured(spark, consent_when_missing, expected):
    """A shop without a consent column (accepts_marketing null for all): `campaigns.consent_when_missing` decides;
    an explicit refusal stays `unsubscribed` whatever it says."""
    campaign = Campaign(name="win_back", description="d", audience="segment = 'At Risk'", control_share=0.0)
    rows = [customer(1, consent=None), customer(2, consent=False)]
    suppression = Suppression(spark.createDataFrame([], "customer_id long"), consent_when_missing)
    result = outcome(audiences(view_of(spark, rows), [campaign], suppression))
    assert result == {("win_back", 1): expected, ("win_back", 2): ("suppressed", "unsubscribed")}

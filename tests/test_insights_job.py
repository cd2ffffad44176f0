"""The insights job on a lake of its own: what a night does with texts it cannot judge on held-out data.

The job runs in a process of its own, as an Airflow task runs it, on a silver layer written here with delta-rs:
no reviews, and inquiries from a contact form (tests/test_insight_models.form_inquiries: four fixed subjects,
none of which the split by text holds out), the shape of bench/nightly.py's shop, whose night once failed here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from test_insight_models import FORM_SUBJECTS, form_inquiries

from conftest import REPO, session_environ

RUN_DATE = date(2026, 11, 26)
INSIGHTS_NIGHT = """
import json, sys
from datetime import date
from jobs import insights
from core.config import load_config

print(json.dumps(insights.run(date.fromisoformat(sys.argv[1]), load_config(), "form-inquiries"), default=str))
"""

REVIEWS = pa.schema(
    [("id", pa.int64()), ("customer_id", pa.int64()), ("product_id", pa.int64()), ("rating", pa.int32()), ("title", pa.string()),
     ("body", pa.string()), ("language", pa.string()), ("created_at", pa.timestamp("us", tz="UTC"))]
)  # fmt: skip
INQUIRIES = pa.schema(
    [("id", pa.int64()), ("customer_id", pa.int64()), ("channel", pa.string()), ("subject", pa.string()), ("body", pa.string()),
     ("status", pa.string()), ("resolved_at", pa.timestamp("us", tz="UTC")), ("created_at", pa.timestamp("us", tz="UTC")),
     ("topic", pa.string())]
)  # fmt: skip


def test_inquiries_too_alike_to_hold_any_out_are_triaged_and_the_night_says_it_could_not_judge_them(tmp_path):
    from core.config import load_config

    data = tmp_path / "data"
    environ = {**session_environ(), "CRM_ENV": "test", "CRM_DATA_DIR": str(data), "PYTHONPATH": str(REPO)}
    conf = load_config(environ=environ).insights
    inquiries = form_inquiries(300, conf.holdout_share, conf.seed).assign(channel="email", topic=None)
    silver = data / "lake" / "silver"
    write_deltalake(str(silver / "reviews"), REVIEWS.empty_table())
    write_deltalake(str(silver / "inquiries"), pa.Table.from_pandas(inquiries[INQUIRIES.names], schema=INQUIRIES, preserve_index=False))

    script = tmp_path / "insights_night.py"  # a file, not `python -c`: Great Expectations cannot be imported under -c
    script.write_text(INSIGHTS_NIGHT)
    night = subprocess.run(
        [sys.executable, str(script), RUN_DATE.isoformat()], cwd=REPO, capture_output=True, text=True, timeout=600, env=environ
    )
    assert night.returncode == 0, night.stderr[-3000:]
    result = json.loads(night.stdout.strip().splitlines()[-1])

    assert "0 held-out texts of 4 distinct texts" in result["degraded"]["inquiry_triage_evaluation"]
    assert "inquiries" not in result["degraded"] and "triage_keyword_agreement_macro_f1" not in result["figures"]
    assert result["rows"]["inquiry_triage"] == len(inquiries)
    triage = DeltaTable(str(data / "lake" / "gold" / "inquiry_triage")).to_pandas().set_index("inquiry_id")
    expected = inquiries.set_index("id")["subject"].map(FORM_SUBJECTS)
    assert (triage.loc[expected.index, "topic"] == expected).all()
    assert "too few to learn sentiment" in result["degraded"]["reviews"]

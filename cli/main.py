"""`crm`: the command line of shop-crm.

Errors are printed as one clear message and a non-zero exit code (1: the run or input failed, 2: bad
usage); `--debug` shows the traceback. One place turns a failure into its message: `_Commands.invoke`,
with `_explain` mapping each known kind of failure (a database down or refusing, a data root that cannot be
written, a full disk, a missing lake table, Spark or Java missing, bad configuration) to what failed and
what to do, passwords masked.
"""

from __future__ import annotations

import errno
import logging
import os
import shlex
import sys
from datetime import date, timedelta
from pathlib import Path

import click
import yaml

from cli import orchestrate
from cli.orchestrate import prepare_airflow
from core import nightlock
from core.config import Settings, load_config
from core.private import private_files
from core.rundate import RunDateError, parse_run_date, yesterday

# Each command imports the rest of what it uses in its own body (all imports below are deferred on purpose):
# `crm --help` and quick commands load only click and the configuration, ~0.25 s; SQLAlchemy alone would add
# ~0.3 s, the jobs Spark and pandas, the report MLflow.


class _Date(click.ParamType):
    name = "YYYY-MM-DD"

    def convert(self, value, param, ctx):
        if isinstance(value, date):
            return value
        try:
            return parse_run_date(value, param.opts[0] if param else "date")
        except RunDateError as error:
            self.fail(str(error), param, ctx)


DATE = _Date()


class _Commands(click.Group):
    """The `crm` group: any command's failure is printed as `_explain` words it, exit status 1; with
    `--debug` it is raised as it was (the traceback)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as error:
            if (ctx.obj or {}).get("debug"):
                raise
            click.echo(_explain(error), err=True)
            ctx.exit(1)


#: errno values that mean a file or folder cannot be written here.
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR}


def _explain(error: BaseException) -> str:
    """What failed and what to do, in one to three lines starting `error: `, any password in it masked."""
    from core.db import masked  # deferred: only on a failure (SQLAlchemy); `crm --help` stays quick

    kind = {f"{cls.__module__}.{cls.__name__}" for cls in type(error).__mro__}
    first = (str(getattr(error, "orig", None) or error).strip().splitlines() or [""])[0]
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        where = error.filename or _data_dir()
        message = f"no space left on the device of {where}: free some space there (`crm doctor` shows how much a night needs)"
    elif isinstance(error, OSError) and error.errno in _NOT_WRITABLE:
        message = (
            f"cannot write {error.filename or 'a file'} ({error.strerror}): the data root {_data_dir()} must be a folder this user "
            "can write; make it so, or set CRM_DATA_DIR to one"
        )
    elif "sqlalchemy.exc.DBAPIError" in kind:
        where = getattr(error, "database_url", None) or "a database"
        check = (
            "does its folder exist, and may this user write there?"
            if where.startswith("sqlite:")
            else "is the server running, and are its URL, user and password right?"
        )
        message = f"{where}: {first}\n{check} (`crm config` shows the URLs in effect, `crm doctor` checks them)"
    elif "pymongo.errors.PyMongoError" in kind:
        message = f"document shop: {first}\nis the server running, and is shop.url (env CRM_SHOP_URL) right? (`crm doctor` checks it)"
    elif "deltalake.exceptions.TableNotFoundError" in kind:
        message = f"the lake under {_data_dir()} lacks a table ({first}): has a night run on this data root? (`crm run`)"
    elif any(name.startswith(("pyspark.", "py4j.")) for name in kind):
        message = f"Spark failed: {first}\n(`crm doctor` checks Java and Spark; `crm --debug ...` shows the traceback)"
    elif isinstance(error, (ValueError, RuntimeError, OSError)):  # the project's own errors say what and what to do
        message = str(error)
    else:
        message = f"{type(error).__name__}: {first} (unexpected; `crm --debug ...` shows the traceback)"
    return masked(f"error: {message}")


def _data_dir() -> str:
    try:
        return str(load_config().data_dir)
    except Exception:  # the configuration itself may be what is wrong
        return "(data root)"


@click.group(cls=_Commands)
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """shop-crm: the shop's database in, CRM tables and marketing exports out."""
    ctx.obj = {"debug": debug}
    private_files()  # what any command writes (and the Airflow, Spark and MLflow it starts) is for this user alone
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@main.command("generate-shop")
@click.option("--customers", type=click.IntRange(min=1), default=None, help="Number of customers (default: generator.customers).")
@click.option("--seed", type=int, default=None, help="Random seed; the same seed gives the same shop (default: generator.seed).")
@click.option(
    "--url",
    default=None,
    help="SQLAlchemy URL of the shop database, or mongodb://host:port/<database> for "
    "a document shop (default: shop.url, env CRM_SHOP_URL).",
)
@click.option("--end-date", type=DATE, default=None, help="Last day of the shop's history (default: yesterday, UTC).")
@click.option("--truth-dir", type=click.Path(path_type=Path), default=None, help="Where the ground truth goes (default: <data>/truth).")
@click.option("--replace", is_flag=True, help="Drop and recreate the shop tables if they hold rows.")
@click.option(
    "--schema",
    "schema",
    default="auto",
    show_default=True,
    help="Table and column names of the shop: a mapping in conf/mappings/ (e.g. woocommerce); auto: "
    "canonical for a SQL shop, mongodb for a document shop.",
)
@click.option(
    "--events",
    type=click.Choice(["none", "table", "files"]),
    default=None,
    help="Browsing events: the shop table `events` (SQL shops), one NDJSON file per day in --landing, or none (default: generator.events).",
)
@click.option(
    "--events-days",
    type=click.IntRange(min=1),
    default=None,
    help="Events for the last N days of the history (default: generator.events_days).",
)
@click.option("--landing", type=click.Path(path_type=Path), default=None, help="Folder of the event files (default: events.landing_dir).")
@click.pass_context
def generate_shop_command(ctx, customers, seed, url, end_date, truth_dir, replace, schema, events, events_days, landing):
    """Write a realistic generated shop (and its ground truth, kept apart) to a database."""

    def work():
        from core import db
        from core.mapping import load_mapping
        from demo_shop.generate_shop import generate_shop
        from demo_shop.mapped import clear_renamed_tables, rename_shop
        from jobs.extract import AUTO_MAPPING

        settings = load_config()
        target = url or settings.shop.url
        document_shop = db.is_document_shop(target)
        name = AUTO_MAPPING["documents" if document_shop else "relational"] if schema == "auto" else schema
        mapping = load_mapping(settings.conf_dir / "mappings" / f"{name}.yaml")
        count = customers or settings.generator.customers
        truth = truth_dir or settings.data_dir / "truth"
        events_output = events or settings.generator.events
        landing_dir = landing or Path(settings.events.landing_dir)
        if not document_shop and db.kind(target) == "sqlite":
            from sqlalchemy.engine import make_url

            Path(make_url(target).database).parent.mkdir(parents=True, exist_ok=True)
        if not document_shop:
            clear_renamed_tables(target, mapping, replace)
        with click.progressbar(length=count, label=f"generating {count:,} customers", file=sys.stderr) as bar:
            summary = generate_shop(
                target,
                customers=count,
                seed=settings.generator.seed if seed is None else seed,
                end_date=end_date or yesterday(),
                truth_dir=truth,
                replace=replace,
                progress=lambda done: bar.update(done - bar.pos),
                mapping=mapping if document_shop else None,
                events=events_output,
                events_days=events_days or settings.generator.events_days,
                landing_dir=landing_dir if events_output == "files" else None,
            )
        if document_shop:
            written = {}
            for table, rows in summary["rows"].items():
                source = mapping[table]
                where = f"{source.source}.{source.embedded}" if source.embedded else source.source
                written[where] = rows
            rows = ", ".join(f"{where} {count:,}" for where, count in written.items())
            click.echo(f"shop written to {db.masked(target)} (documents; embedded arrays as collection.field): {rows}")
            for table, left_out in summary.get("not_written", {}).items():
                click.echo(f"  {left_out:,} {table} row(s) left out: their parent is not in the shop (no document to embed them in)")
        else:
            rename_shop(target, mapping)
            rows = ", ".join(f"{mapping[table].source} {count:,}" for table, count in summary["rows"].items())
            click.echo(f"shop written to {db.masked(target)}: {rows}")
        if "events" in summary:
            written = summary["events"]
            where = (
                f"{written['files']} NDJSON file(s) in {landing_dir}"
                if events_output == "files"
                else f"table events of {db.masked(target)}"
            )
            click.echo(
                f"events: {written['written']:,} written to {where}, {written['first_day']} to "
                f"{written['last_day']} ({written['duplicates']:,} re-sent, "
                f"{written['bad']['unknown_event_type']:,} of an unknown type)"
            )
        click.echo(f"ground truth in {truth}")

    _guarded(ctx, work)


@main.command("run")
@click.option("--date", "run_date", type=DATE, default=None, help="Run date (default: yesterday, UTC).")
@click.option("--from", "first", type=DATE, default=None, help="Backfill: first run date (with --to).")
@click.option("--to", "last", type=DATE, default=None, help="Backfill: last run date, included (with --from).")
@click.option("--full", is_flag=True, help="Reload every shop table whole instead of the changes since the last night.")
@click.option("--wait", is_flag=True, help="When another night holds the data root, wait for it to end instead of refusing.")
@click.pass_context
def run_command(ctx, run_date, first, last, full, wait):
    """Run the nightly DAG through Airflow for one date, or for each date of --from..--to in order.

    A backfill shows a progress bar on stderr, prints a line per finished night on stdout and stops at the
    first night that fails (exit 1, naming it and how to go on). One night at a time per data root: while
    another holds it, this one refuses naming it (exit 1), or with --wait waits for it.
    """
    if (first is None) != (last is None):
        raise click.UsageError("--from and --to go together (a backfill of the dates between them)")
    if first is not None and run_date is not None:
        raise click.UsageError("give either --date or --from/--to, not both")
    if first is not None and first > last:
        raise click.UsageError(f"--from {first} is after --to {last}")

    def work():
        from cli import doctor

        settings = load_config()
        command = f"crm run --from {first} --to {last}" if first is not None else "crm run"
        with nightlock.hold(settings, command, first or run_date or yesterday(), wait, lambda line: click.echo(line, err=True)):
            doctor.night_preflight(settings)
            night(settings)

    def night(settings: Settings) -> None:
        from cli import summary

        if first is not None:
            day = last
            run_id, log = _backfill(settings, [first + timedelta(days=n) for n in range((last - first).days + 1)], full)
        else:
            day = run_date or yesterday()
            click.echo(
                f"running {settings.airflow.dag_id} for {day} through Airflow "
                f"(home {settings.airflow.home}; log in {settings.data_dir / 'logs'}) ...",
                err=True,
            )
            run_id, log = orchestrate.run_nightly_logged(settings, day, full=full)
        click.echo(summary.render(settings, day, run_id))
        click.echo(f"  run log        {log}")

    _guarded(ctx, work)


def _backfill(settings: Settings, days: list[date], full: bool) -> tuple[str, Path]:
    """Run the nightly DAG for each date in order, stopping at the first night that fails.

    A progress bar on stderr shows the night running, the share of nights done and, after the first, the
    time left (where stderr is no terminal, only a line per night); each finished night gets a line on
    stdout. Returns the last night's run id and log.
    """
    click.echo(
        f"backfill of {len(days)} nights, {days[0]} to {days[-1]}, through Airflow "
        f"(home {settings.airflow.home}; logs in {settings.data_dir / 'logs'}) ...",
        err=True,
    )
    labels = [f"{settings.airflow.dag_id} for {day} ({number}/{len(days)})" for number, day in enumerate(days, 1)]
    # A label names the night running; where stderr is no terminal, click prints only the label, once per change.
    with click.progressbar(length=len(days), label=labels[0], file=sys.stderr, show_percent=True) as bar:
        for number, (day, label) in enumerate(zip(days, labels), 1):
            bar.label = label
            bar.render_progress()
            try:
                run_id, log = orchestrate.run_nightly_logged(settings, day, full=full and number == 1)
            except orchestrate.PipelineRunError as error:
                again = f"crm run --from {day} --to {days[-1]}{' --full' if full and number == 1 else ''}"
                raise orchestrate.PipelineRunError(
                    f"backfill stopped at {day} (night {number} of {len(days)}): {error}\n"
                    f"the nights after it did not run; once it is fixed, go on with: {again}"
                ) from error
            _above_the_bar(f"{day}: {run_id} succeeded (log {log})")
            bar.update(1)
    return run_id, log


def _above_the_bar(line: str) -> None:
    """Print a result line on stdout; on a terminal, wipe the progress bar's line first (it is drawn again next)."""
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()
    click.echo(line)


@main.command("train")
@click.option("--date", "run_date", type=DATE, default=None, help="Run date (default: yesterday, UTC).")
@click.pass_context
def train_command(ctx, run_date):
    """Train a churn challenger through Airflow (DAG crm_training) and make it the champion if it wins."""

    def work():

        settings = load_config()
        day = run_date or yesterday()
        with nightlock.hold(settings, "crm train", day):
            training(settings, day)

    def training(settings: Settings, day: date) -> None:
        from cli import summary

        click.echo(
            f"running {settings.airflow.training_dag_id} for {day} through Airflow (log in {settings.data_dir / 'logs'}) ...", err=True
        )
        run_id, log = orchestrate.run_nightly_logged(settings, day, training=True)
        click.echo(summary.render_training(settings, run_id))
        click.echo(f"  run log        {log}")

    _guarded(ctx, work)


@main.command("export")
@click.option(
    "--date",
    "run_date",
    type=DATE,
    default=None,
    help="Run date to export (default: the latest run date that gold holds for every exported dataset).",
)
@click.pass_context
def export_command(ctx, run_date):
    """Write exports/<run date>/ again from the lake's gold tables, without rerunning the night.

    For when the export settings changed, e.g. the PII policy export.pii: the CSV and Parquet files, JSON
    Schemas and manifest.json are written the way the night writes them (the folder replaced whole, _SUCCESS
    last, then exports/latest moved when it is the newest date; export.keep_runs applies). The manifest's
    run id is that of the night whose rows gold holds for the date. Prints the export folder. Airflow is not
    involved: DAGs scheduled on the exports asset (shop-crm://exports) do not run for it.
    """

    def work():
        from jobs import export

        settings = load_config()
        gold = settings.lake_location.spark_uri("gold")
        click.echo(f"exporting {run_date or 'the latest run date'} from {gold} ({', '.join(settings.export.datasets)}) ...", err=True)
        with nightlock.hold(settings, "crm export", run_date):  # the night's export task writes the same folders
            click.echo(export.rerun(settings, run_date))

    _guarded(ctx, work)


@main.command("demo")
@click.pass_context
def demo_command(ctx):
    """Generate the demo shop if it is missing, run yesterday's night, print the summary (`make demo`)."""
    settings = load_config()
    with nightlock.hold(settings, "crm demo", yesterday()):
        if not _shop_has_customers(settings.shop.url):
            ctx.invoke(generate_shop_command)
        else:
            click.echo("demo shop present: reusing it (crm generate-shop --replace makes a new one)", err=True)
        ctx.invoke(run_command)


def _shop_has_customers(url: str) -> bool:
    from sqlalchemy import inspect, text

    from core import db

    if db.is_document_shop(url):
        with db.document_database(url) as database:
            return database["customers"].find_one({}, {"_id": 1}) is not None
    if db.kind(url) == "sqlite":
        from sqlalchemy.engine import make_url

        if not Path(make_url(url).database).exists():
            return False
    engine = db.engine(url)
    if not inspect(engine).has_table("customers"):
        return False
    with engine.connect() as connection:
        return connection.execute(text("SELECT count(*) FROM customers")).scalar() > 0


@main.command("config")
@click.option("--reference", is_flag=True, help="Print the configuration reference (Markdown) instead.")
@click.pass_context
def config_command(ctx, reference):
    """Print the configuration in effect (passwords and tokens masked), after overlays and environment."""

    def work():
        from core import config, db

        if reference:
            click.echo(config.settings_reference())
            return
        settings = db.masked_settings(load_config().model_dump(mode="json"))
        click.echo(yaml.safe_dump(settings, sort_keys=False, allow_unicode=True))

    _guarded(ctx, work)


@main.command("airflow")
@click.pass_context
def airflow_command(ctx):
    """Run Airflow as in production until Ctrl-C: scheduler, DAG processor, triggerer and API server with the
    LocalExecutor on a PostgreSQL metadata database (cli/airflow_server.py, docs/operating.md)."""

    def work():
        from cli import airflow_server

        private_files()
        airflow_server.serve(load_config(), log=lambda line: click.echo(line, err=True))

    _guarded(ctx, work)


@main.command("airflow-env")
@click.pass_context
def airflow_env_command(ctx):
    """Print `export` lines that point the `airflow` command at this project's `crm run` Airflow (SQLite), and
    `umask 077`, so that Airflow started from that shell writes its files for this user alone."""

    def work():
        click.echo("umask 077")
        for key, value in prepare_airflow(load_config()).items():
            click.echo(f"export {key}={shlex.quote(value)}")

    _guarded(ctx, work)


@main.command("status")
@click.option("--runs", type=click.IntRange(min=1), default=5, show_default=True, help="How many of the latest runs.")
@click.pass_context
def status_command(ctx, runs):
    """The latest pipeline runs: each stage's outcome, time and what it did (CRM table pipeline_runs)."""

    def work():
        from core import runlog

        settings = load_config()
        holder = nightlock.holder(settings)
        click.echo(runlog.render_status(runlog.recent_runs(settings, runs), holder and holder.get("run_id"), nightlock.last_seen(settings)))

    _guarded(ctx, work)


@main.command("landing")
@click.option("--date", "run_date", type=DATE, default=None, help="The night to plan for (default: yesterday, UTC).")
@click.pass_context
def landing_command(ctx, run_date):
    """The event files in the landing folder: read by which night, waiting (and why), or new."""

    def work():
        from jobs.events import landing_report

        click.echo("\n".join(landing_report(load_config(), run_date or yesterday())))

    _guarded(ctx, work)


@main.command("report")
@click.option("--date", "run_date", type=DATE, default=None, help="Run date (default: the latest with a report, else yesterday).")
@click.option("--open", "open_it", is_flag=True, help="Open the report in the web browser.")
@click.option("--rebuild", is_flag=True, help="Build it again from the lake even if the night wrote one.")
@click.pass_context
def report_command(ctx, run_date, open_it, rebuild):
    """Print the path of a run's HTML report (building it when missing); --open shows it in the browser."""

    def work():
        import webbrowser

        from jobs import report

        settings = load_config()
        day = run_date or report.latest_report_date(settings) or yesterday()
        path = report.report_path(settings, day)
        if rebuild or not path.exists():
            path = report.build(settings, day)
        click.echo(path)
        if open_it and not webbrowser.open(path.as_uri()):
            click.echo(f"no web browser found here; open {path.as_uri()} on a machine with one", err=True)

    _guarded(ctx, work)


@main.command("doctor")
@click.option("--quick", is_flag=True, help="Leave out the Spark check (it starts Spark: about 15 s).")
@click.pass_context
def doctor_command(ctx, quick):
    """Check that this machine can run the pipeline: configuration, databases, Java, Spark, Airflow, MLflow."""
    checks = []

    def work():
        from cli import doctor

        checks.extend(doctor.run_checks(quick=quick))
        click.echo(doctor.render(checks))

    _guarded(ctx, work)
    if not all(check.ok for check in checks):
        ctx.exit(1)


def _role_name(ctx, param, value: str) -> str:
    from core.roles import check_role_name

    try:
        return check_role_name(value, "role name")
    except ValueError as error:
        raise click.BadParameter(str(error).removeprefix("role name: "), ctx, param) from None


@main.command("db-roles")
@click.option(
    "--analyst",
    default="crm_analyst",
    show_default=True,
    callback=_role_name,
    help="Read-only role: SELECT on the CRM tables (password: env CRM_ANALYST_PASSWORD; without one a NOLOGIN group role).",
)
@click.option(
    "--writer",
    default="crm_writer",
    show_default=True,
    callback=_role_name,
    help="Role the pipeline publishes as: owns the CRM tables (password: env CRM_WRITER_PASSWORD; without one a NOLOGIN group role).",
)
@click.pass_context
def db_roles_command(ctx, analyst, writer):
    """Create or update the CRM database's read-only analyst role and the pipeline's writer role.

    Connects as env CRM_DB_ADMIN_URL (a user who may create roles and owns the CRM database), else as
    crm.db_url. Running it again only updates the passwords.
    """

    def work():
        from sqlalchemy.engine import make_url

        from core import db
        from core.roles import create_roles

        settings = load_config()
        crm_url = settings.crm.db_url
        if db.kind(crm_url) == "sqlite":
            raise ValueError(f"roles need PostgreSQL; crm.db_url is {db.masked(crm_url)}")
        admin_url = os.environ.get("CRM_DB_ADMIN_URL") or crm_url
        if make_url(admin_url).database != make_url(crm_url).database:
            raise ValueError(
                f"CRM_DB_ADMIN_URL: database {make_url(admin_url).database!r}; expected the CRM "
                f"database of crm.db_url, {make_url(crm_url).database!r}"
            )
        statements = create_roles(
            admin_url,
            settings.crm.schema_name,
            analyst,
            writer,
            os.environ.get("CRM_ANALYST_PASSWORD") or None,
            os.environ.get("CRM_WRITER_PASSWORD") or None,
        )
        for statement in statements:
            click.echo(f"{statement};")
        login = {
            role: "LOGIN" if os.environ.get(variable) else "NOLOGIN (a group role)"
            for role, variable in ((analyst, "CRM_ANALYST_PASSWORD"), (writer, "CRM_WRITER_PASSWORD"))
        }
        click.echo(f"{analyst}: reads schema {settings.crm.schema_name} of {db.masked(crm_url)}, {login[analyst]}", err=True)
        click.echo(f"{writer}: owns and writes its tables, {login[writer]}", err=True)

    _guarded(ctx, work)


@main.group("campaigns", invoke_without_command=True)
@click.option(
    "--date",
    "run_date",
    type=DATE,
    default=None,
    help="Check the conditions against this run date's gold customer view (default: the newest in gold).",
)
@click.pass_context
def campaigns_command(ctx, run_date):
    """Check the campaign files (conf/campaigns/*.yaml) and show whom each would select, without writing.

    Every file is read and checked (fields, then its expressions against the customer view of a run date in
    gold); a bad one is named with its field, exit 1. For each campaign: customers who meet the condition.
    `crm campaigns check` checks the files alone, without Spark or a lake.
    """
    if ctx.invoked_subcommand is not None:
        return

    def work():
        from jobs import campaigns

        settings = load_config()
        for line in campaigns.preview(settings, run_date):
            click.echo(line)

    _guarded(ctx, work)


@campaigns_command.command("check")
@click.pass_context
def campaigns_check_command(ctx):
    """Check every campaign file: known fields, and audience and order_by made only of the customer view's
    columns, operators and allowed functions (docs/campaigns.md). One line per file; exit 1 if one is bad."""

    def work():
        from models.campaigns import check_campaign_files  # deferred: imports pyspark (no Spark is started)

        settings = load_config()
        folder = settings.conf_dir / settings.campaigns.folder
        good, problems = check_campaign_files(folder)
        for path in good:
            click.echo(f"ok   {path}")
        for problem in problems:
            click.echo(f"FAIL {problem}")
        click.echo(f"{len(good) + len(problems)} campaign file(s) in {folder}: " + (f"{len(problems)} bad" if problems else "all good"))
        if problems:
            ctx.exit(1)

    _guarded(ctx, work)


@main.command("db-upgrade")
@click.option("--revision", default="head", show_default=True, help="Revision to migrate to (see core/migrations/versions/).")
@click.option("--sql", "as_sql", is_flag=True, help="Print the SQL that builds the schema from nothing, without connecting.")
@click.pass_context
def db_upgrade_command(ctx, revision, as_sql):
    """Bring the CRM database's tables, indexes and views to this version of shop-crm (Alembic migrations).

    Publishing does it by itself; run it by hand to migrate before a night, as the schema owner (the writer
    role of `crm db-roles`), or with --sql to let a DBA review and run the SQL.
    """

    def work():
        from alembic.util import CommandError

        from core import db, migrate
        from core.crm_schema import schema_of

        settings = load_config()
        url, schema = settings.crm.db_url, schema_of(settings.crm.db_url, settings.crm.schema_name)
        try:
            if as_sql:
                click.echo(migrate.upgrade_sql(url, schema, revision))
                return
            before, after = migrate.upgrade(url, schema, revision)
        except CommandError as error:
            raise ValueError(f"--revision {revision}: {error}") from None
        where = f"{db.masked(url)}" + (f", schema {schema}" if schema else "")
        if before == after:
            click.echo(f"{where}: at revision {after} already (newest: {migrate.head()})")
        else:
            click.echo(f"{where}: migrated from {before or 'no version'} to {after}")

    _guarded(ctx, work)


def _guarded(ctx: click.Context, work) -> None:
    """Run a command's work; a failure is explained by the group (`_Commands.invoke`)."""
    work()


if __name__ == "__main__":
    main()

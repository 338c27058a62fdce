"""Intake layers without a server: path canonicalisation, defender, logins, worker selection,
the patches to asyncssh."""

import bisect
import itertools
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import asyncssh
import asyncssh.encryption
import asyncssh.logging
import pytest
from asyncssh.channel import SSHChannel
from asyncssh.connection import SSHServerConnection
from asyncssh.crypto.chacha import ChachaCipher as StockChacha
from asyncssh.packet import String, UInt32, UInt64
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from rosterdrop.inbox.models import Upload
from rosterdrop.intake import asyncssh_patches, defender, worker
from rosterdrop.intake.folder import is_staging_name, virtual_name
from rosterdrop.intake.models import Ban, Login
from rosterdrop.intake.sftp import ConnState, RosterSSHServer, _Session


@pytest.mark.parametrize(
    ("path", "name"),
    [
        (b"/", ""),
        (b".", ""),
        (b"/../..", ""),
        (b"..", ""),
        (b"//users.csv", "users.csv"),
        (b"/../users.csv", "users.csv"),
        (b"users.csv/", "users.csv"),
        (b"./a/../b.csv", "b.csv"),
        ("．．".encode(), "．．"),
        (b"Users.CSV", "Users.CSV"),
    ],
)
def test_virtual_name(path, name):
    assert virtual_name(path) == name


@pytest.mark.parametrize("path", [b"a\x00b", b"..\\x", b"a/b", b"/etc/passwd", b"\xff", b"x" * 300])
def test_virtual_name_refuses(path):
    with pytest.raises(OSError):
        virtual_name(path)


def test_staging_names():
    assert is_staging_name("users.csv.filepart") and is_staging_name(".users.csv.tmp")
    assert not is_staging_name("users.csv") and not is_staging_name("roster.zip")


def test_begin_auth_never_returns_false():
    """asyncssh reads False from begin_auth as "no authentication needed"."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(RosterSSHServer.begin_auth)))
    returns = [n.value for n in ast.walk(tree) if isinstance(n, ast.Return)]
    assert returns and all(isinstance(v, ast.Constant) and v.value is True for v in returns)


@pytest.mark.django_db(transaction=True)
def test_login_password_keys_and_ips(district, tmp_path):
    login = Login(district=district, name="x", allowed_ips="10.0.0.0/8, 192.168.1.5")
    login.set_password("s3cret-pass")
    assert login.password_hash.startswith("$argon2id$")
    assert login.check_password("s3cret-pass") and not login.check_password("nope")
    assert login.ip_allowed("10.1.2.3") and login.ip_allowed("192.168.1.5")
    assert not login.ip_allowed("127.0.0.1")
    key = asyncssh.generate_private_key("ssh-ed25519")
    fingerprint = login.add_public_key(key.export_public_key().decode())
    login.add_public_key(key.export_public_key().decode())
    assert fingerprint.startswith("SHA256:")
    assert [k.public_data for k in login.authorized_keys()] == [key.public_data]


def test_login_names_follow_the_configured_scheme(district, settings, capsys):
    from django.core.management import call_command

    call_command(
        "sftp-user", "add", "--district", district.slug, "--person", "Ana María", "--state", "TX"
    )
    assert Login.objects.get(district=district).name == "anamaria_admin_springfield_tx"
    settings.SFTP_LOGIN_SCHEME = "{district}-{person}"
    call_command("sftp-user", "add", "--district", district.slug, "--person", "Bo")
    assert Login.objects.filter(name="springfield-bo").exists()


@pytest.mark.django_db(transaction=True)
def test_defender(settings):
    settings.DEFENDER_THRESHOLD = 3
    settings.DEFENDER_BAN_SECONDS = 100
    settings.DEFENDER_SAFELIST = "10.9.0.0/16"
    assert not defender.add_score("1.2.3.4", 2, "test")
    assert defender.add_score("1.2.3.4", 1, "test")
    assert defender.is_banned("1.2.3.4")
    ban = Ban.objects.get(ip="1.2.3.4")
    first = ban.banned_until - timezone.now()
    Ban.objects.filter(pk=ban.pk).update(banned_until=timezone.now() - timedelta(seconds=1))
    assert not defender.is_banned("1.2.3.4")
    assert defender.add_score("1.2.3.4", 3, "test")
    second = Ban.objects.get(ip="1.2.3.4").banned_until - timezone.now()
    assert second > first * 1.4  # escalates by half
    for _ in range(10):
        assert not defender.add_score("10.9.1.1", 5, "test")
    assert not defender.is_banned("10.9.1.1")


def make_upload(district, name, seconds_ago=0.0, source="sftp") -> Upload:
    upload = Upload.objects.create(
        district=district, filename=name, size=1, sha256="0" * 64, source=source, stored_path="x"
    )
    Upload.objects.filter(pk=upload.pk).update(
        received_at=timezone.now() - timedelta(seconds=seconds_ago)
    )
    return upload


@pytest.fixture
def imported(monkeypatch):
    """Replace the pipeline: record which sets would be imported."""
    from rosterdrop.ingest import syncs
    from rosterdrop.ingest.models import Sync

    calls = []

    def fake(district, uploads, **kwargs):
        calls.append(sorted(u.filename for u in uploads))
        sync = Sync.objects.create(district=district, status="applied")
        Upload.objects.filter(pk__in=[u.pk for u in uploads]).update(status="imported")
        return sync

    monkeypatch.setattr(syncs, "import_uploads", fake)
    return calls


@pytest.mark.django_db(transaction=True)
def test_worker_zip_at_once_loose_after_quiet_period(district, imported):
    district.quiet_period_seconds = 60
    district.save()
    make_upload(district, "roster.zip")
    make_upload(district, "users.csv", 30)
    make_upload(district, "orgs.csv", 10)
    make_upload(district, "notes.txt")
    make_upload(district, "cli.zip", source="cli")
    wait = worker.run_once()
    assert imported == [["roster.zip"]]
    assert 45 < wait <= 50
    notes = Upload.objects.get(filename="notes.txt")
    assert notes.status == "unmatched" and "users.csv" in notes.outcome
    worker.run_once(timezone.now() + timedelta(seconds=51))
    assert imported == [["roster.zip"], ["orgs.csv", "users.csv"]]
    assert Upload.objects.get(filename="cli.zip").status == "received"  # not the worker's
    assert worker.run_once(timezone.now() + timedelta(seconds=500)) is None
    assert len(imported) == 2


@pytest.mark.django_db(transaction=True)
def test_worker_newer_copy_wins_and_paused_waits(district, imported):
    district.quiet_period_seconds = 0
    district.paused = True
    district.save()
    old = make_upload(district, "users.csv", 5)
    new = make_upload(district, "users.csv", 1)
    worker.run_once()
    assert imported == []
    district.paused = False
    district.save()
    worker.run_once()
    assert imported == [["users.csv"]]
    old.refresh_from_db()
    new.refresh_from_db()
    assert (old.status, new.status) == ("expired", "imported")
    assert f"upload {new.pk}" in old.outcome


@pytest.mark.django_db(transaction=True)
def test_worker_case_hint_and_failure(district, monkeypatch):
    from rosterdrop.ingest import syncs

    make_upload(district, "Users.csv")
    monkeypatch.setattr(syncs, "import_uploads", lambda *a, **k: 1 / 0)
    make_upload(district, "roster.zip")
    worker.run_once()
    assert "Did you mean users.csv?" in Upload.objects.get(filename="Users.csv").outcome
    failed = Upload.objects.get(filename="roster.zip")
    assert failed.status == "failed" and "division by zero" in failed.outcome


def districts_waiting(count: int, quiet: int = 86400) -> list:
    """`count` districts, each with a loose file in a long quiet period (upload.py's burst)."""
    from rosterdrop.districts.models import District

    made = []
    for n in range(count):
        d = District.objects.create(
            slug=f"d{n}", name=f"D{n}", format="oneroster-1.1", quiet_period_seconds=quiet
        )
        make_upload(d, "users.csv")
        made.append(d)
    return made


@pytest.mark.parametrize("count", [3, 30])
@pytest.mark.django_db(transaction=True)
def test_a_wake_up_looks_at_its_district_not_at_every_waiting_one(
    count, imported, monkeypatch, settings
):
    """upload29's aftermath: after a burst to many districts each upload's wake-up made a
    pass over every waiting district. The worker thread, after its first pass, woken for one
    district: it looks at that district alone, however many wait (their quiet periods a day)."""
    import threading
    import time

    from rosterdrop.intake import queue

    if settings.JOB_QUEUE:
        pytest.skip("serve's worker thread runs on SQLite (PostgreSQL: the job queue)")
    settings.WORKER_POLL_SECONDS = 3600  # no sweep but the first: only wake-ups and timers
    many = districts_waiting(count)
    looked: list[int] = []
    real = worker.run_district
    monkeypatch.setattr(worker, "run_district", lambda d, *a: looked.append(d.pk) or real(d, *a))
    passes = threading.Semaphore(0)
    monkeypatch.setattr(worker, "build_index", lambda: passes.release() and False)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        assert passes.acquire(timeout=60)  # the first pass: every waiting district
        assert sorted(looked) == sorted(d.pk for d in many)
        looked.clear()
        for d in many[:3]:
            make_upload(d, "orgs.csv")
            before = len(looked)
            queue.wake(d)  # as `upload_waiting` does
            deadline = time.monotonic() + 60
            while d.pk not in looked[before:] and time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        stop.set()
        worker.wake()
        thread.join(30)
    assert not thread.is_alive()
    assert sorted(looked) == [d.pk for d in many[:3]], (count, len(looked))
    assert imported == []  # all in their quiet period


@pytest.mark.django_db(transaction=True)
def test_passes_find_what_came_without_a_wake_up_and_quiet_periods_ending(
    imported, django_assert_max_num_queries
):
    """What the worker remembers only says where to look first: a sweep finds an upload no
    wake-up announced, a changed quiet period, "Import now"; a timer the end of a quiet
    period; and a pass woken for one district makes the same queries with 3 or 30 waiting."""
    many = districts_waiting(30, quiet=60)
    passes = worker.Passes()
    now = timezone.now()
    assert 0 < passes.run(now, everything=True) <= 60  # the first one made (a slow machine)
    assert passes.looked == 30 and imported == []
    assert passes.run(now, sweep=True) is not None and passes.looked == 30  # nothing changed
    make_upload(many[0], "orgs.csv")  # stored by another process, no wake-up
    many[1].quiet_period_seconds = 0
    many[1].save()
    passes.run(now, sweep=True)
    assert passes.looked == 32 and imported == [["users.csv"]]
    many[2].import_requested_at = timezone.now()
    many[2].save()
    passes.run(timezone.now(), sweep=True)
    assert passes.looked == 33 and imported == [["users.csv"]] * 2
    # Woken for one district: the same queries whatever else waits.
    worker.wake(many[3].pk)
    with django_assert_max_num_queries(4):  # the district's uploads, its pause, the format
        passes.run(timezone.now())
    assert passes.looked == 34
    # The quiet periods end: each district is looked at by its timer, without a sweep.
    later = timezone.now() + timedelta(seconds=61)
    assert passes.run(later) is None
    assert len(imported) == 30 and passes.looked == 34 + 28
    assert Upload.objects.filter(status="received").count() == 0


@pytest.mark.django_db(transaction=True)
def test_recover_settles_interrupted_syncs(district, imported):
    from rosterdrop.ingest import recovery
    from rosterdrop.ingest.models import Sync

    done_upload = make_upload(district, "a.zip")
    Sync.objects.create(district=district, status="applied").uploads.add(done_upload)
    crashed_upload = make_upload(district, "b.zip")
    crashed = Sync.objects.create(district=district, status="running")  # no runner: dead
    crashed.uploads.add(crashed_upload)
    recovery.recover()
    done_upload.refresh_from_db()
    crashed.refresh_from_db()
    assert done_upload.status == "imported"
    assert crashed.status == "interrupted"
    assert imported == [["b.zip"]]  # imported again, once


# -- asyncssh_patches: the same cipher as asyncssh's own, the version it was written for ----


@settings(max_examples=200, deadline=None)
@given(
    key=st.binary(min_size=64, max_size=64),
    data=st.binary(max_size=5000),
    seq=st.integers(0, 2**32 - 1),
)
def test_chacha_is_asyncssh_s_cipher(key, data, seq):
    header, nonce = len(data).to_bytes(4, "big"), UInt64(seq)
    theirs, ours = StockChacha(key), asyncssh_patches.ChachaCipher(key)
    sealed = theirs.encrypt_and_sign(header, data, nonce)
    assert ours.encrypt_and_sign(header, data, nonce) == sealed
    (packet, tag) = sealed
    assert ours.decrypt_header(packet[:4], nonce) == header
    assert ours.verify_and_decrypt(packet[:4], packet[4:], nonce, tag) == data
    # The other way, on a context that has just worked on another packet
    packet, tag = ours.encrypt_and_sign(header, data, UInt64(seq ^ 1))
    assert theirs.verify_and_decrypt(packet[:4], packet[4:], UInt64(seq ^ 1), tag) == data
    assert ours.verify_and_decrypt(packet[:4], packet[4:], UInt64(seq ^ 1), tag) == data


@given(
    key=st.binary(min_size=64, max_size=64),
    data=st.binary(min_size=1, max_size=300),
    flip=st.integers(0, 10_000),
)
def test_chacha_refuses_a_changed_packet(key, data, flip):
    cipher = asyncssh_patches.ChachaCipher(key)
    packet, tag = cipher.encrypt_and_sign(b"\0\0\0\1", data, UInt64(7))
    changed = bytearray(packet + tag)
    changed[flip % len(changed)] ^= 1
    packet, tag = bytes(changed[: len(packet)]), bytes(changed[len(packet) :])
    assert cipher.verify_and_decrypt(packet[:4], packet[4:], UInt64(7), tag) is None
    assert cipher.verify_and_decrypt(packet[:4], packet[4:], UInt64(8), tag) is None


@given(
    key=st.binary(min_size=64, max_size=64),
    data=st.binary(min_size=4, max_size=5000),
    seq=st.integers(0, 2**32 - 1),
)
def test_chacha_packet_joined_once_is_asyncssh_s(key, data, seq):
    """ChachaEncryption.decrypt_packet as asyncssh calls it: the first block (the length and
    the payload's first bytes) apart from the rest."""
    header = len(data).to_bytes(4, "big")
    packet, tag = StockChacha(key).encrypt_and_sign(header, data, UInt64(seq))
    ours = asyncssh.encryption.ChachaEncryption(asyncssh_patches.ChachaCipher(key))
    assert asyncssh_patches._decrypt_packet(ours, seq, packet[:8], packet[8:], 4, tag) == data
    assert asyncssh_patches._decrypt_packet(ours, seq ^ 1, packet[:8], packet[8:], 4, tag) is None


class _Channel:
    """What the short way reads of asyncssh's SSHChannel, an open one by default, with the
    session it hands data to (the channel itself here): one that takes several packets' data
    at once, as sftp._Session does. `calls`: what each call gave it."""

    _accept_data = SSHChannel._accept_data  # a tun/tap channel's is its own

    def __init__(self, window: int = 1 << 20, **state):
        self._recv_state = "open"
        self._send_state = "open"
        self._recv_paused = False
        self._encoding = None
        self._recv_window = self._init_recv_window = window
        self._session = self
        self.__dict__.update(state)
        self.calls: list[list[bytes]] = []
        self.sent: list[tuple[int, bytes]] = []

    def parts_received(self, parts) -> None:
        self.calls.append([bytes(part) for part in parts])

    def send_packet(self, pkttype: int, *args: bytes) -> None:
        self.sent.append((pkttype, b"".join(args)))

    @property
    def delivered(self) -> list[tuple[bytes, None]]:
        return [(data, None) for call in self.calls for data in call]


class _Connection:
    """What _recv_channel_data reads of asyncssh's SSHConnection, as _recv_pkthdr leaves it
    once a packet's first block is read: the packet sealed with chacha20-poly1305."""

    def __init__(self, payload: bytes, chan: _Channel, seq: int = 41, tamper: bool = False):
        key = bytes(range(64))
        header = len(payload).to_bytes(4, "big")
        sealed, tag = StockChacha(key).encrypt_and_sign(header, payload, UInt64(seq))
        if tamper:
            tag = bytes([tag[0] ^ 1]) + tag[1:]
        cipher = asyncssh_patches.ChachaCipher(key)
        self._recv_encryption = asyncssh.encryption.ChachaEncryption(cipher)
        self._decompressor = None
        self._auth_complete = True
        self._recv_macsize, self._recv_blocksize = 16, 8
        self._pktlen = len(payload)
        self._packet, self._inpbuf = sealed[:8], sealed[8:] + tag + b"next"
        self._recv_seq = seq
        self._channels = {3: chan}
        self.finished: list = []

    def _finish_recv_packet(self, pkttype, seq):
        self.finished.append((pkttype, seq))


def _channel_data(data: bytes, chan: int = 3, kind: int = 94, pad: int = 6) -> bytes:
    """An SSH_MSG_CHANNEL_DATA payload (94) as it is padded: padding length first."""
    return bytes([pad, kind]) + UInt32(chan) + String(data) + bytes(pad)


@pytest.fixture
def generic(monkeypatch):
    """asyncssh's own _recv_packet, recorded instead of run."""
    taken: list = []
    monkeypatch.setattr(asyncssh_patches, "_recv_packet", lambda conn: taken.append(conn))
    return taken


def test_channel_data_takes_the_short_way(generic):
    chan = _Channel(window=1000)
    conn = _Connection(_channel_data(b"x" * 600), chan)
    assert asyncssh_patches._recv_channel_data(conn) is True
    assert chan.delivered == [(b"x" * 600, None)]
    assert chan.sent == [(93, UInt32(600))]  # below half the window: asyncssh's adjust
    assert chan._recv_window == 1000
    assert conn.finished == [(94, 41)]  # its sequence number, then the next header
    assert conn._inpbuf == b"next"
    assert not generic


@pytest.mark.parametrize(
    ("payload", "chan", "tamper"),
    [
        (_channel_data(b"x" * 600), _Channel(), True),  # its tag does not check out
        (_channel_data(b"x" * 600, kind=93), _Channel(), False),  # not channel data
        (_channel_data(b"x" * 600, chan=4), _Channel(), False),  # no such channel
        (_channel_data(b"x" * 600)[:-7], _Channel(), False),  # shorter than it says
        (_channel_data(b""), _Channel(), False),
        (_channel_data(b"x" * 600, pad=0), _Channel(), False),  # asyncssh: an empty payload
        (_channel_data(b"x" * 600), _Channel(window=599), False),  # past the window
        (_channel_data(b"x" * 600), _Channel(_recv_state="eof"), False),
        (_channel_data(b"x" * 600), _Channel(_send_state="close_pending"), False),
        (_channel_data(b"x" * 600), _Channel(_recv_paused=True), False),
        (_channel_data(b"x" * 600), _Channel(_encoding="utf-8"), False),
        (_channel_data(b"x" * 600), _Channel(_session=object()), False),  # one at a time
    ],
)
def test_any_other_packet_takes_asyncssh_s_way(generic, payload, chan, tamper):
    conn = _Connection(payload, chan, tamper=tamper)
    before = (conn._packet, conn._inpbuf, chan._recv_window)
    asyncssh_patches._recv_channel_data(conn)
    assert generic == [conn]
    assert (conn._packet, conn._inpbuf, chan._recv_window) == before
    assert not chan.delivered and not conn.finished


def test_asyncssh_debug_logging_takes_asyncssh_s_way(generic, monkeypatch):
    monkeypatch.setattr(asyncssh.logging.SSHLogger, "_debug_level", 2)
    conn = _Connection(_channel_data(b"x" * 600), _Channel())
    asyncssh_patches._recv_channel_data(conn)
    assert generic == [conn]


_KEY = bytes(range(64))


def _receiving(chan: _Channel, seq: int) -> SSHServerConnection:
    """asyncssh's own connection object as it stands once logged in, receiving with
    chacha20-poly1305 for one open channel (3), without a loop or a socket."""
    conn = object.__new__(SSHServerConnection)
    cipher = asyncssh_patches.ChachaCipher(_KEY)
    for name, value in {
        "_recv_encryption": asyncssh.encryption.ChachaEncryption(cipher),
        "_recv_macsize": 16,
        "_recv_blocksize": 8,
        "_max_recv_pktlen": 35000,
        "_decompressor": None,
        "_auth_complete": True,
        "_auth_final": True,
        "_auth": None,
        "_kex": None,
        "_strict_kex": False,
        "_server_version": b"SSH-2.0-test",
        "_logger": asyncssh.logging.logger,
        "_keepalive_timer": None,
        "_keepalive_interval": 0,
        "_transport": object(),
        "_inpbuf": b"",
        "_packet": b"",
        "_recv_seq": seq,
        "_channels": {3: chan},
    }.items():
        setattr(conn, name, value)
    conn._recv_handler = conn._recv_pkthdr
    return conn


def _sealed(payload: bytes, seq: int) -> bytes:
    header = len(payload).to_bytes(4, "big")
    packet, tag = StockChacha(_KEY).encrypt_and_sign(header, payload, UInt64(seq))
    return packet + tag


_DATA = [b"a" * 700, b"b" * 5000, None, b"c" * 40, b"d" * 3000]  # None: an SSH_MSG_IGNORE


@given(cuts=st.lists(st.integers(0, 9000), max_size=12), seq=st.integers(0, 2**32 - 6))
def test_channel_data_read_in_place_whatever_the_reads(cuts, seq):
    """The packets of a stream of channel data with an other packet among them, in reads cut
    anywhere: the same data to the channel, in order, each packet's sequence number once."""
    assert asyncssh_patches.install()
    stream = b"".join(
        _sealed(_channel_data(data) if data else b"\x04\x02" + String(b"") + bytes(4), seq + n)
        for n, data in enumerate(_DATA)
    )
    chan = _Channel()
    conn = _receiving(chan, seq)
    bounds = [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)]
    for start, end in zip(bounds, bounds[1:], strict=False):
        if end > start:
            conn.data_received(stream[start:end])
    assert chan.delivered == [(data, None) for data in _DATA if data]
    assert conn._recv_seq == seq + len(_DATA)
    assert (conn._inpbuf, conn._packet) == (b"", b"")


class _AsyncsshChannel(_Channel):
    """asyncssh's own channel steps for the data it accepts (`_accept_data`, `_deliver_data`:
    the window and its adjusts), the data to `calls` one packet at a time."""

    _deliver_data = SSHChannel._deliver_data
    logger = SimpleNamespace(debug2=lambda *args: None)

    def __init__(self, window: int):
        super().__init__(window, _recv_buf=[])

    def data_received(self, data: bytes, datatype) -> None:
        self.calls.append([data])


_IGNORE = b"\x04\x02" + String(b"") + bytes(4)  # an SSH_MSG_IGNORE's payload, padded


@settings(max_examples=150, deadline=None)
@given(
    packets=st.lists(
        st.tuples(st.sampled_from([3, 3, 3, 5, None]), st.integers(1, 5000)),
        min_size=1,
        max_size=14,
    ),
    window=st.integers(10_000, 40_000),
    cuts=st.lists(st.integers(0, 80_000), max_size=6),
    near=st.lists(st.tuples(st.integers(0, 13), st.integers(-20, 20)), max_size=4),
    seq=st.integers(0, 2**32 - 20),
)
def test_a_read_s_channel_data_goes_to_each_session_at_once(packets, window, cuts, near, seq):
    """Channel data for two channels with an SSH_MSG_IGNORE among it (None), in reads cut
    anywhere (`near`: a few bytes from a packet's start, within its length or its first
    block): each channel's session gets its data in order, each read's run of packets for it
    in one call, the packet an earlier read started with it; the window adjusts sent and the
    window left are asyncssh's own for the same packets; every sequence number taken once."""
    assert asyncssh_patches.install()
    datas = [bytes([65 + n % 26]) * size for n, (_, size) in enumerate(packets)]
    sealed = [
        _sealed(_channel_data(data, chan=number) if number else _IGNORE, seq + n)
        for n, ((number, _), data) in enumerate(zip(packets, datas, strict=True))
    ]
    stream = b"".join(sealed)
    ends = list(itertools.accumulate(map(len, sealed)))
    chans = {3: _Channel(window), 5: _Channel(window)}
    conn = _receiving(chans[3], seq)
    conn._channels = dict(chans)
    starts = [0, *ends[:-1]]
    cuts = [*cuts, *(starts[n % len(starts)] + offset for n, offset in near)]
    bounds = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    reads = [stream[start:end] for start, end in zip(bounds, bounds[1:], strict=False)]
    for read in reads:
        conn.data_received(read)
    assert conn._recv_seq == seq + len(packets)
    assert (conn._inpbuf, conn._packet) == (b"", b"")
    for number, chan in chans.items():
        theirs = _AsyncsshChannel(window)
        mine = [data for (n, _), data in zip(packets, datas, strict=True) if n == number]
        for data in mine:
            theirs._accept_data(data)
        assert chan.delivered == theirs.delivered == [(data, None) for data in mine]
        assert (chan.sent, chan._recv_window) == (theirs.sent, theirs._recv_window)
        assert [len(call) for call in chan.calls] == _calls(packets, ends, bounds, number)


def _calls(packets, ends, bounds, number: int) -> list[int]:
    """How many packets each call gives channel `number`'s session: a read's packets for it
    in runs, from the packet an earlier read started to another packet; after that one,
    asyncssh's path goes on to the read's end, a call per packet."""
    calls: list[int] = []
    last = (-1, None)  # the read and the channel of the packet before
    slow = -1  # the read in which asyncssh's path took over
    for (chan, _), end in zip(packets, ends, strict=True):
        read = bisect.bisect_left(bounds, end) - 1
        if chan is None:
            slow = read
        elif chan == number:
            if last == (read, chan) and slow != read:
                calls[-1] += 1
            else:
                calls.append(1)
        last = (read, chan)
    return calls


def test_channel_data_of_one_read_in_one_call():
    """Eight packets of an upload in one read: one call with their eight parts; cut in two
    reads within the fourth packet: two calls, three parts and five."""
    assert asyncssh_patches.install()
    chan = _Channel()
    conn = _receiving(chan, 7)
    packets = [_sealed(_channel_data(bytes([n]) * 3000), 7 + n) for n in range(8)]
    conn.data_received(b"".join(packets))
    assert [len(call) for call in chan.calls] == [8]
    conn = _receiving(chan, 7)
    chan.calls.clear()
    stream = b"".join(packets)
    cut = len(b"".join(packets[:3])) + 100
    conn.data_received(stream[:cut])
    conn.data_received(stream[cut:])
    assert [len(call) for call in chan.calls] == [3, 5]
    assert chan.delivered == [(bytes([n]) * 3000, None) for n in range(8)]


@given(cut=st.integers(1, 9000), bad=st.integers(0, 4))
def test_a_changed_packet_ends_the_connection(cut, bad):
    """A packet whose tag does not check out is refused by asyncssh's path (MAC error: the
    connection is closed); nothing of it or after it reaches the channel."""
    assert asyncssh_patches.install()
    packets = [
        bytearray(_sealed(_channel_data(data or b"i"), 7 + n)) for n, data in enumerate(_DATA)
    ]
    packets[bad][-1] ^= 1
    stream = b"".join(packets)
    chan = _Channel()
    conn = _receiving(chan, 7)
    ended: list = []
    conn._send_disconnect = lambda code, reason, lang: ended.append(reason)
    conn._force_close = lambda exc: setattr(conn, "_transport", None)
    cut %= len(stream)
    for part in (stream[:cut], stream[cut:]):
        if part and conn._transport is not None:
            conn.data_received(part)
    assert ended == ["MAC verification failed"]
    assert chan.delivered == [(data or b"i", None) for data in _DATA[:bad]]


def test_a_failing_session_ends_the_connection_as_asyncssh_s_path_does():
    """An exception from the channel's session while packets are read in place is asyncssh's
    internal error (logged, the connection closed), not the socket transport's."""
    assert asyncssh_patches.install()

    class Failing(_Channel):
        def parts_received(self, parts):
            raise RuntimeError("session failed")

    conn = _receiving(Failing(), 7)
    ended: list = []
    conn.internal_error = lambda *args, **kwargs: ended.append("internal error")
    conn.data_received(_sealed(_channel_data(b"x" * 600), 7))
    assert ended == ["internal error"]


def test_data_past_a_full_stream_waits_in_the_channel():
    """Several packets' data at once (_Session.parts_received) that asyncssh's SFTP server is to
    read: given to its stream as bytes, as asyncssh's channel gives them, until the stream
    pauses the channel (its buffer at its limit); the rest waits in the channel's buffer, where
    asyncssh's channel holds what arrives while paused."""
    session = _Session(ConnState(ip=None))
    chan = SimpleNamespace(_recv_paused=False, _recv_buf=[])
    chan.pause_reading = lambda: setattr(chan, "_recv_paused", True)
    session._chan = chan
    session._limit = 1000
    session.parts_received([memoryview(bytes([n]) * 600) for n in range(3)])
    assert session._recv_buf[None] == [bytes([0]) * 600, bytes([1]) * 600]
    assert all(type(data) is bytes for data in session._recv_buf[None])
    assert chan._recv_buf == [(bytes([2]) * 600, None)]


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def abort(self) -> None:
        raise AssertionError("aborted at once: asyncssh does it a turn of the loop later")


def test_what_a_read_makes_the_server_send_goes_out_in_one_write():
    """The packets the server sends while it handles a socket read (an SSH_MSG_IGNORE and a
    window adjust per data packet here), and what at_read_end's hooks send then (the replies),
    go to the transport in one write at the read's end; a send outside a read goes at once."""
    assert asyncssh_patches.install()
    transport = _Transport()

    class Answering(_Channel):
        def parts_received(self, parts):
            super().parts_received(parts)
            conn._send(b"ignore;")
            conn._send(b"adjust;")
            assert asyncssh_patches.at_read_end(conn, lambda: conn._send(b"replies;"))

    chan = Answering()
    conn = _receiving(chan, 7)
    conn._transport = transport
    stream = _sealed(_channel_data(b"x" * 600), 7) + _sealed(_channel_data(b"y" * 900), 8)
    conn.data_received(stream[:700])
    assert transport.writes == [b"ignore;adjust;replies;"]
    conn.data_received(stream[700:])
    assert transport.writes[1:] == [b"ignore;adjust;replies;"]
    assert len(chan.delivered) == 2
    assert not asyncssh_patches.at_read_end(conn, lambda: None)
    conn._send(b"alone")
    assert transport.writes[2:] == [b"alone"]


def test_a_read_that_ends_the_connection_still_sends_what_it_sent():
    """A packet that does not check out: asyncssh sends its disconnect and closes the
    connection (the transport aborted a turn of the loop later): the disconnect goes out
    before that, as asyncssh's own write does."""
    assert asyncssh_patches.install()
    transport = _Transport()
    scheduled: list = []
    conn = _receiving(_Channel(), 7)
    conn._transport = transport
    conn._loop = SimpleNamespace(call_soon=lambda fn, *args: scheduled.append(fn))
    conn._send_disconnect = lambda code, reason, lang: conn._send(reason.encode())
    bad = bytearray(_sealed(_channel_data(b"x" * 600), 7))
    bad[-1] ^= 1
    conn.data_received(bytes(bad))
    assert transport.writes == [b"MAC verification failed"]
    assert conn._transport is None
    assert scheduled[0] == transport.abort


def test_asyncssh_is_the_version_the_patches_were_written_for():
    """An upgrade of asyncssh (requirements.lock) fails here: check asyncssh_patches against
    the new version's encryption.py and connection.py, then move ASYNCSSH_VERSION."""
    lock = (Path(__file__).parents[1] / "requirements.lock").read_text()
    assert f"asyncssh=={asyncssh_patches.ASYNCSSH_VERSION} " in lock
    assert asyncssh.__version__ == asyncssh_patches.ASYNCSSH_VERSION
    assert asyncssh_patches.install()
    assert asyncssh.encryption.ChachaCipher is asyncssh_patches.ChachaCipher
    assert asyncssh.connection.SSHConnection._recv_packet is asyncssh_patches._recv_channel_data

"""Our local tar walk reads every shard as WebDataset and ``tarfile`` read it: the same samples,
the same sample starts, the same failures, on the tars other writers produce (ustar prefixes, GNU
and pax long names, directories, links) and on shards cut off or damaged at any byte.

    python -m pytest tests/data/test_tar_members.py -q
"""

import io
import tarfile

import pytest
import webdataset as wds
from webdataset.tariterators import group_by_keys, tar_file_expander

from sinktrain.data.tar_members import regular_members
from sinktrain.data.tar_samples import ReadStats, member_key, sample_starts, samples_from

LONG_DIR = "a-directory-name-long-enough/" * 4  # > 100 characters: a ustar prefix, a GNU or pax long name


def add(tar, name, data=b"", kind=tarfile.REGTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, len(data) if kind == tarfile.REGTYPE else 0
    if kind == tarfile.SYMTYPE:
        info.linkname = "elsewhere"
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def members_of_every_kind():
    yield "__meta__", b"{}", tarfile.REGTYPE  # WebDataset's metadata: no sample
    for j in range(3):
        yield f"s{j}.json", b'{"id": %d}' % j, tarfile.REGTYPE
        yield f"s{j}.JPG", bytes([j]) * 600, tarfile.REGTYPE  # upper case: read as "jpg"
    yield "folder", b"", tarfile.DIRTYPE
    yield "folder/s3.txt", b"", tarfile.REGTYPE  # empty data
    yield "no-extension", b"x", tarfile.REGTYPE  # no key: skipped
    yield "link.txt", b"", tarfile.SYMTYPE
    yield LONG_DIR + "s4.json", b"[1]", tarfile.REGTYPE
    yield LONG_DIR + "s4.png", b"p" * 513, tarfile.REGTYPE
    yield "s5.caption.txt", "ünïcode".encode(), tarfile.REGTYPE
    yield "sé6.txt", b"a pax header in PAX format", tarfile.REGTYPE
    yield "s7.txt", b"last", tarfile.REGTYPE


def write_tar(path, tar_format):
    with tarfile.open(path, "w", format=tar_format) as tar:
        for name, data, kind in members_of_every_kind():
            if tar_format == tarfile.USTAR_FORMAT and "é" in name:
                continue  # ustar has no way to write it
            add(tar, name, data, kind)
    return str(path)


def write_webdataset_tar(path, samples=12):
    with wds.TarWriter(str(path)) as sink:
        for j in range(samples):
            sink.write({"__key__": f"k{j:04d}", "jpg": bytes([j]) * (300 + 97 * j), "json": b'{"j": %d}' % j})
    return str(path)


def webdataset_reads(url):
    """WebDataset's samples of a whole shard, and whether it raised."""
    samples = []
    try:
        with open(url, "rb") as stream:
            samples += group_by_keys(tar_file_expander([{"url": url, "stream": stream}], eof_value=None))
    except (tarfile.TarError, OSError, ValueError):
        return samples, True
    return samples, False


def ours_reads(url, start=0):
    samples = []
    try:
        samples += samples_from(url, start, ReadStats())
    except (tarfile.TarError, OSError, ValueError):
        return samples, True
    return samples, False


def tarfile_sample_starts(url):
    """Sample starts by ``tarfile`` headers: the index as it was counted before our walk."""
    starts, previous = [], None
    try:
        with tarfile.open(url, mode="r:") as tar:
            for member in tar:
                key = member_key(member.name) if member.isreg() else None
                if key is not None and key != previous:
                    starts.append(member.offset)
                    previous = key
    except tarfile.TarError:
        pass
    return starts


@pytest.fixture(params=["ustar", "gnu", "pax", "webdataset"])
def shard(request, tmp_path):
    if request.param == "webdataset":
        return write_webdataset_tar(tmp_path / "wds.tar")
    formats = dict(ustar=tarfile.USTAR_FORMAT, gnu=tarfile.GNU_FORMAT, pax=tarfile.PAX_FORMAT)
    return write_tar(tmp_path / f"{request.param}.tar", formats[request.param])


def test_whole_shards_read_as_webdataset_reads_them(shard):
    theirs, raised = webdataset_reads(shard)
    assert not raised and len(theirs) >= 7
    assert ours_reads(shard) == (theirs, False)
    assert sample_starts(shard) == tarfile_sample_starts(shard)
    for start in range(len(theirs) + 1):
        assert ours_reads(shard, start) == (theirs[start:], False)


def test_member_names_and_offsets_match_tarfile(shard):
    with tarfile.open(shard) as tar:
        expected = [(m.name, m.offset, tar.extractfile(m).read()) for m in tar if m.isreg()]
    with open(shard, "rb") as stream:
        assert [(name, offset, read()) for name, offset, read in regular_members(stream)] == expected


@pytest.mark.parametrize("writer", ["webdataset", "gnu"])
def test_a_shard_cut_off_at_any_byte_reads_as_before(tmp_path, writer):
    whole = (write_webdataset_tar(tmp_path / "whole.tar", samples=4) if writer == "webdataset"
             else write_tar(tmp_path / "whole.tar", tarfile.GNU_FORMAT))
    data, (whole_samples, _) = open(whole, "rb").read(), webdataset_reads(whole)
    cut = str(tmp_path / "cut.tar")
    for end in range(0, len(data), 97):
        open(cut, "wb").write(data[:end])
        assert sample_starts(cut) == tarfile_sample_starts(cut), end
        (theirs, they_raised), (ours, we_raised) = webdataset_reads(cut), ours_reads(cut)
        assert theirs == ours[: len(theirs)] and we_raised == they_raised, end
        # WebDataset reads a member before it gives the sample before it: a cut in that member loses
        # the whole sample before it too; we give it
        if len(ours) > len(theirs):
            assert len(ours) == len(theirs) + 1 and we_raised, end
            assert {**ours[-1], "__url__": whole} == whole_samples[len(theirs)], end


def test_a_damaged_header_ends_the_shard_there_as_tarfile_does(tmp_path):
    shard = write_webdataset_tar(tmp_path / "damaged.tar")
    data = bytearray(open(shard, "rb").read())
    fifth = sample_starts(shard)[4]
    data[fifth + 148] ^= 0x01  # its checksum no longer matches
    open(shard, "wb").write(bytes(data))
    assert sample_starts(shard) == tarfile_sample_starts(shard) == sample_starts(shard)[:4]
    assert ours_reads(shard) == webdataset_reads(shard)


def test_a_duplicate_member_raises_as_in_webdataset(tmp_path):
    path = str(tmp_path / "duplicate.tar")
    with tarfile.open(path, "w") as tar:
        for name in ["a.txt", "a.jpg", "a.txt"]:
            add(tar, name, b"x")
    assert ours_reads(path) == webdataset_reads(path) == ([], True)

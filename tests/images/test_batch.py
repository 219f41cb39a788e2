"""prepare_batch, prepare_batch_async and make_preview_grid."""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import pickle
import threading
import time

import pytest
from PIL import Image

from bot.images import (
    ImageLimits,
    ImageProblem,
    PreparedBatch,
    SourceImage,
    _batch,
    make_preview_grid,
    prepare_batch,
    prepare_batch_async,
)

from . import corpus

LIMITS = ImageLimits()


def item(name: str, data: bytes, declared: str | None = "image/jpeg") -> tuple[SourceImage, bytes]:
    return SourceImage(name, declared, len(data)), data


def photos(count: int, *, start: int = 0, size: tuple[int, int] = (640, 560)) -> list[tuple[SourceImage, bytes]]:
    return [item(f"photo{i + 1}.jpg", corpus.photo_jpeg(*size, 500 + i)) for i in range(start, start + count)]


def test_five_distinct_photos_are_ok():
    batch = prepare_batch(photos(5), LIMITS)
    assert batch.ok
    assert batch.rejected == ()
    assert batch.warnings == ()
    assert batch.count_problem is None
    assert [p.filename for p in batch.images] == [f"photo{i}.jpg" for i in range(1, 6)]


def test_ten_is_still_ok_and_eleven_is_too_many():
    assert prepare_batch(photos(10), LIMITS).ok
    batch = prepare_batch(photos(11), LIMITS)
    assert not batch.ok
    assert batch.count_problem == "11 usable photos were given; at most 10 can be used."


def test_too_few_photos():
    batch = prepare_batch(photos(4), LIMITS)
    assert not batch.ok
    assert batch.count_problem == "Only 4 photos were given; at least 5 are needed."
    one = prepare_batch(photos(1), LIMITS)
    assert one.count_problem == "Only 1 photo was given; at least 5 are needed."


def test_rejections_make_the_batch_not_ok_and_count_against_the_minimum():
    items = [*photos(4), item("notes.png", corpus.text_file(), "image/png"), item("dot.png", corpus.one_pixel_png())]
    batch = prepare_batch(items, LIMITS)
    assert not batch.ok
    assert [(r.filename, r.problem) for r in batch.rejected] == [
        ("notes.png", ImageProblem.NOT_AN_IMAGE),
        ("dot.png", ImageProblem.TOO_SMALL),
    ]
    assert batch.count_problem == "Only 4 of the 6 photos can be used; at least 5 are needed."


def test_one_rejection_alone_makes_the_batch_not_ok():
    batch = prepare_batch([*photos(5), item("empty.jpg", b"")], LIMITS)
    assert batch.count_problem is None
    assert not batch.ok


def test_empty_batch():
    batch = prepare_batch([], LIMITS)
    assert not batch.ok
    assert batch.count_problem == "Only 0 photos were given; at least 5 are needed."


def test_near_duplicates_are_warned_about_by_name():
    original, reencoded, resized = corpus.near_duplicates()
    items = [
        item("beach.jpg", original),
        *photos(3),
        item("beach_copy.jpg", reencoded),
        item("beach_small.jpg", resized),
    ]
    batch = prepare_batch(items, LIMITS)
    assert batch.ok  # a warning, not a refusal
    assert batch.warnings == (
        "beach_copy.jpg looks like a near-duplicate of beach.jpg",
        "beach_small.jpg looks like a near-duplicate of beach.jpg",
    )


def test_exact_copies_are_named_as_such():
    data = corpus.photo_jpeg(640, 560, 77)
    batch = prepare_batch([*photos(4), item("a.jpg", data), item("b.jpg", data)], LIMITS)
    assert batch.warnings == ("b.jpg is an exact copy of a.jpg",)


def test_distinct_photos_never_look_like_duplicates():
    batch = prepare_batch(photos(10, size=(600, 600)), LIMITS)
    assert batch.warnings == ()


def test_per_image_warnings_reach_the_batch():
    png = corpus.encode(corpus.photo_image(700, 600, 4), "PNG")
    items = [*photos(4), item("photo.jpg", png, "image/jpeg"), item("anim.gif", corpus.animated("GIF"), "image/gif")]
    batch = prepare_batch(items, LIMITS)
    assert batch.ok
    assert batch.warnings == (
        "photo.jpg was declared as image/jpeg but is actually a PNG image; it was read as PNG",
        "anim.gif is animated; only its first frame was used",
    )


def test_batch_results_survive_pickling():
    """So that a ProcessPoolExecutor can be used as the executor."""
    batch = prepare_batch([*photos(2), item("x.txt", b"hello", "text/plain")], LIMITS)
    assert pickle.loads(pickle.dumps(batch)) == batch


def test_custom_limits_are_honoured():
    limits = ImageLimits(min_images=2, max_images=3, output_size=256, min_side=300)
    batch = prepare_batch(photos(3), limits)
    assert batch.ok
    assert corpus.decoded(batch.images[0].data).size == (256, 256)


# --------------------------------------------------------------------------- async


async def test_async_runs_pillow_work_in_the_given_executor(monkeypatch):
    threads: list[threading.Thread] = []
    original = _batch.prepare

    def spy(*args):
        threads.append(threading.current_thread())
        return original(*args)

    monkeypatch.setattr(_batch, "prepare", spy)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pillow-test") as pool:
        batch = await prepare_batch_async(photos(5), LIMITS, executor=pool)
    assert batch.ok
    assert len(threads) == 5
    assert all(t is not threading.main_thread() and t.name.startswith("pillow-test") for t in threads)


async def test_async_defaults_to_the_loop_executor(monkeypatch):
    loop_thread = threading.current_thread()
    seen: list[threading.Thread] = []
    original = _batch.prepare

    def spy(*args):
        seen.append(threading.current_thread())
        return original(*args)

    monkeypatch.setattr(_batch, "prepare", spy)
    batch = await prepare_batch_async(photos(1), LIMITS)
    assert isinstance(batch, PreparedBatch)
    assert seen and all(t is not loop_thread for t in seen)


async def test_async_does_not_block_the_event_loop(monkeypatch):
    """While a slow batch is prepared, other coroutines keep running."""

    def slow_batch(items, limits):
        time.sleep(0.3)
        return PreparedBatch(images=(), rejected=(), warnings=())

    monkeypatch.setattr(_batch, "prepare_batch", slow_batch)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        await prepare_batch_async(photos(1), LIMITS)
    finally:
        task.cancel()
    assert ticks >= 10


async def test_async_snapshots_the_items():
    items = photos(5)
    pending = asyncio.ensure_future(prepare_batch_async(items, LIMITS))
    await asyncio.sleep(0)  # the coroutine has handed the work to the executor
    items.clear()  # e.g. another coroutine reusing the list
    assert len((await pending).images) == 5


# --------------------------------------------------------------------------- preview grid


@pytest.fixture(scope="module")
def ten_prepared():
    return prepare_batch(photos(10), LIMITS).images


def test_grid_of_ten_is_two_rows_of_five(ten_prepared):
    data = make_preview_grid(ten_prepared)
    assert len(data) < 1_500_000
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "JPEG"
        assert img.size == (1280, 512)
        img.load()
        first = corpus.decoded(ten_prepared[0].data).resize((256, 256))
        assert corpus.close(img.getpixel((128, 128)), first.getpixel((128, 128)), 40)


@pytest.mark.parametrize(
    ("count", "tile", "columns", "size"),
    [(1, 256, 5, (256, 256)), (7, 128, 5, (640, 256)), (6, 100, 3, (300, 200)), (5, 600, 5, (3000, 600))],
)
def test_grid_dimensions(ten_prepared, count, tile, columns, size):
    data = make_preview_grid(ten_prepared[:count], tile=tile, columns=columns)
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        assert img.size == size
    assert len(data) < 1_500_000


def test_grid_needs_images():
    with pytest.raises(ValueError, match="at least one image"):
        make_preview_grid([])
    with pytest.raises(ValueError, match="positive"):
        make_preview_grid([object()], tile=0)  # type: ignore[list-item]


def test_concurrent_batches_match_sequential_results():
    """Shared state (HEIC registration, the ICC transform cache) is safe across worker threads."""
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    mixed = [
        *photos(3),
        item("icc.jpg", corpus.encode(corpus.photo_image(640, 560, 40), "JPEG", icc_profile=srgb)),
        item("print.jpg", corpus.cmyk_jpeg()),
        item("anim.gif", corpus.animated("GIF"), "image/gif"),
    ]
    heic = corpus.heic()
    if heic is not None:
        mixed.append(item("IMG_1.HEIC", heic, "image/heic"))
    expected = prepare_batch(mixed, LIMITS)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: prepare_batch(mixed, LIMITS), range(4)))
    assert all(result == expected for result in results)

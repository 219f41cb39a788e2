"""A loopback simulator of the Stable Diffusion API (ModelsLab) v3 LoRA training endpoints and
the v6 image generation that uses a trained LoRA.

It serves the provider's documented request and answer shapes (the `messege` typo,
`cancle_training`, numbers as strings, the 8-status webhook walk), downloads and decodes the
image URLs it is given, and has fault switches for the failure modes a client must survive.

In a test (same process)::

    async with await start_simulator(step_seconds=0.05) as running:
        running.url                              # give it to the client as its base URL
        running.simulator.set_faults(fail_submission=1)
        await running.simulator.wait_for_status(training_id, "model_ready")

As a process: `lorabot simulate` calls `serve(host, port, step_seconds, api_key, faults=...)`,
where `faults` (optional) are switches set at start, e.g. from
`parse_fault_assignments(["status_not_found=2", "fail_submission_kind=queue_full"])`; drive it with
`POST /_sim/faults` (JSON of switch names, see `faults.Faults`), `POST /_sim/reset`,
`GET /_sim/state` and `POST /_sim/trainings/{id}/advance`. The control endpoints take no key:
keep the simulator on loopback. Endpoints are listed in `app.py`.

Image generation: `POST /api/v6/images/text2img` with a `lora_model` that reached `model_ready`
answers `processing` (`t2i_processing_steps` times, counting fetches) and then `success` from
`images/fetch` (`request_id` in the body) or `images/fetch/{id}`; the PNGs it links expire after
`image_ttl_seconds`. In a test::

    running.simulator.set_faults(t2i_processing_steps=0)
    ... POST text2img ...
    generation = await running.simulator.wait_for_generation(generation_id, "success")
    generation.image_names, generation.fetch_count, running.simulator.generations_v6

The switches cover transport faults (held answers, 5xx pages, lost, duplicated or reordered
webhooks, stalls) and the provider's ambiguous answers: a transient "not found" from the status
call, queue-full and spam-filter refusals (and a real duplicate-request window), failures that
only polling reveals and the shapes a failed status may take, a single accepted spelling of the
women training type, validation errors as an object or a string, a provider that moved (3xx to
`/relocated/...`), and the variants of the trained model list; for generations, refusals of every documented kind,
failures while processing, generations that never finish, NSFW flags, only one fetch form, held
answers and short-lived links.
"""

from bot.simulator.app import SIMULATOR_KEY, RunningSimulator, create_app, serve, start_simulator
from bot.simulator.faults import FAILED, STATUSES, FaultError, Faults, parse_fault_assignments
from bot.simulator.state import ImageGeneration, Simulator, SimulatorConfig, Training, WebhookDelivery

__all__ = [
    "FAILED",
    "SIMULATOR_KEY",
    "STATUSES",
    "FaultError",
    "Faults",
    "ImageGeneration",
    "RunningSimulator",
    "Simulator",
    "SimulatorConfig",
    "Training",
    "WebhookDelivery",
    "create_app",
    "parse_fault_assignments",
    "serve",
    "start_simulator",
]

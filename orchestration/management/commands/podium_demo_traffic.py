import asyncio
import random

import httpx
from django.core.management.base import BaseCommand

from orchestration.demo import DEMO_MODELS, DEMO_WORKFLOW_SLUGS

PROMPTS = [
    "Summarise our refund policy in two sentences.",
    "Translate 'good morning' into French, Spanish and German.",
    "Write a haiku about load balancers.",
    "What is the capital of Australia?",
    "Explain circuit breakers to a new engineer.",
    "Draft a polite reply to a customer whose parcel is late.",
]


class Command(BaseCommand):
    help = "Send demo traffic through /v1/chat/completions so the dashboard moves (Ctrl-C stops it)."

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://127.0.0.1:8000")
        parser.add_argument("--key", required=True, help="API key (see var/demo-credentials.txt)")
        parser.add_argument("--rate", type=float, default=3.0, help="requests per second (default 3)")
        parser.add_argument("--count", type=int, default=0, help="stop after this many requests (0 = forever)")
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument("--workflow-share", type=float, default=0.15,
                            help="share of requests that start a demo workflow run instead (default 0.15)")

    def handle(self, *args, url, key, rate, count, seed, workflow_share, **options):
        try:
            asyncio.run(self.drive(url, key, rate, count, random.Random(seed), workflow_share))
        except KeyboardInterrupt:
            pass

    async def drive(self, url, key, rate, count, rng, workflow_share):
        aliases = [m[0] for m in DEMO_MODELS]
        sent, tasks = 0, set()
        async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {key}"}, timeout=30) as client:
            for _ in range(100):  # wait for the server to come up
                try:
                    await client.get("/healthz")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.2)
            while not count or sent < count:
                prompt = rng.choice(PROMPTS)
                if rng.random() < workflow_share:  # some workflow runs, so the runs and reviews pages move too
                    call = self.start_run(client, rng.choice(DEMO_WORKFLOW_SLUGS), prompt)
                else:
                    call = self.call(client, {"model": rng.choice(aliases), "messages": [{"role": "user", "content": prompt}]})
                task = asyncio.create_task(call)
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
                await asyncio.sleep(rng.expovariate(rate))
            await asyncio.gather(*tasks)

    async def start_run(self, client, workflow, prompt):
        try:
            response = await client.post("/api/runs/", json={"workflow": workflow, "input": prompt})
            self.stdout.write(f"workflow/{workflow:<12} {response.status_code}")
        except httpx.HTTPError as exc:
            self.stderr.write(f"workflow/{workflow:<12} {type(exc).__name__}")

    async def call(self, client, body):
        try:
            response = await client.post("/v1/chat/completions", json=body)
            self.stdout.write(f"{body['model']:<12} {response.status_code}")
        except httpx.HTTPError as exc:
            self.stderr.write(f"{body['model']:<12} {type(exc).__name__}")

"""A custom node folder that only the load test's ComfyUI server loads: weak references, by HTTP.

It adds no node; it adds two routes to the server it runs in, for what can only be seen from
inside the server process:

    POST /taca-test/watch   take weak references to every diffusion model alive now (the
                            module and each of its tensors) and to every tensor of the TACA
                            LoRA loader's low-rank adds; reply with the counts per kind
    GET  /taca-test/alive   after gc.collect(), how many of them are still referenced, per
                            kind, with a few examples and what refers to them
    GET  /taca-test/memory  glibc's heap: in use, free but kept, mmapped
    POST /taca-test/trim    glibc's malloc_trim: free heap pages back to the system

The test calls watch, then ComfyUI's own /free (unload_models, free_memory), then alive; and
trim before it reads the server's resident size.
"""

import ctypes
import gc
import weakref

import comfy.model_patcher
import server
from aiohttp import web

NODE_CLASS_MAPPINGS = {}
WATCHED = []  # (kind, label, weak reference)


def watch(kind: str, label: str, obj) -> None:
    WATCHED.append((kind, label, weakref.ref(obj)))


def is_pack_class(obj, name: str, module_tail: str) -> bool:
    # The pack is imported under its folder's path, so its classes are known by name and module.
    cls = type(obj)
    return cls.__name__ == name and cls.__module__.endswith(module_tail)


@server.PromptServer.instance.routes.post("/taca-test/watch")
async def start_watching(request):
    WATCHED.clear()
    gc.collect()
    models = {}
    for obj in gc.get_objects():
        if isinstance(obj, comfy.model_patcher.ModelPatcher) and hasattr(obj.model, "diffusion_model"):
            models[id(obj.model)] = obj.model
    for model in models.values():
        dm = model.diffusion_model
        watch("diffusion model", type(dm).__name__, dm)
        for name, tensor in dm.state_dict(keep_vars=True).items():
            watch("diffusion model tensor", f"{type(dm).__name__}.{name}", tensor)
    for obj in gc.get_objects():
        if is_pack_class(obj, "LowRankAdds", "taca.lowrank"):
            for i, add in enumerate(obj.adds):
                watch("LoRA tensor", f"adapter {i} A", add.down)
                watch("LoRA tensor", f"adapter {i} B", add.up)
            for down, ups in obj._cast.values():
                watch("LoRA tensor", "cast A", down)
                for *_, up in ups:
                    watch("LoRA tensor", "cast B", up)
    return web.json_response(counts(lambda ref: True))


@server.PromptServer.instance.routes.get("/taca-test/alive")
async def still_alive(request):
    gc.collect()
    examples = {}
    for kind, label, ref in WATCHED:
        obj = ref()
        if obj is not None and len(examples.setdefault(kind, [])) < 3:
            referrers = sorted({type(r).__name__ for r in gc.get_referrers(obj)})
            examples[kind].append({"object": label, "referred to by": referrers})
        del obj
    return web.json_response({"alive": counts(lambda ref: ref() is not None), "examples": examples})


def counts(selected) -> dict:
    out = {}
    for kind, _, ref in WATCHED:
        out.setdefault(kind, 0)
        out[kind] += bool(selected(ref))
    return out


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def libc():
    try:
        lib = ctypes.CDLL("libc.so.6")
        lib.mallinfo2.restype = MallInfo2
        return lib
    except (OSError, AttributeError):  # not glibc 2.33 or later
        return None


@server.PromptServer.instance.routes.get("/taca-test/memory")
async def memory(request):
    """glibc's view of the heap (mallinfo2, all arenas): what is in use, and what is free but kept."""
    lib = libc()
    if lib is None:
        return web.json_response({})
    info = lib.mallinfo2()
    return web.json_response({"heap": info.arena, "heap_in_use": info.uordblks, "heap_free": info.fordblks,
                              "mmapped": info.hblkhd})


@server.PromptServer.instance.routes.post("/taca-test/trim")
async def trim(request):
    """Ask glibc to give its free heap pages back to the system (malloc_trim), so that the resident size
    measures memory in use rather than what the allocator keeps; it frees nothing that is in use."""
    lib = libc()
    return web.json_response({"trimmed": bool(lib.malloc_trim(0)) if lib is not None else None})

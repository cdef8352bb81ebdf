import re

import pytest

from appliance.hub import spawn_form as sf
from appliance.protocol import GpuReport

PROFILES = {
    "cpu": {"display_name": "CPU only", "gpus": 0, "mem_limit": None, "cpu_limit": 0.0},
    "big": {"display_name": "2 GPUs, 64 GB", "gpus": 2, "mem_limit": 64 * 2**30, "cpu_limit": 8.0},
}
FOUR = sf.GpuSummary(True, 4, 3)


def test_gpu_count_form_goes_up_to_the_quota_and_shows_free():
    html = sf.render(FOUR, 2, {})
    assert "3 of 4 GPUs free now; your quota is 2 GPUs" in html
    assert re.findall(r'<option value="(\d+)"', html) == ["0", "1", "2"]


def test_no_form_when_there_is_nothing_to_choose():
    assert sf.render(sf.GpuSummary(False, 0, 0, "no driver"), 2, {}) == ""
    assert sf.render(FOUR, 0, {}) == ""


def test_profiles_form_lists_profiles_and_escapes_names():
    html = sf.render(FOUR, 2, {"x": {"display_name": "<b>", "gpus": 1, "mem_limit": None, "cpu_limit": 0}})
    assert "&lt;b&gt;" in html and "<b>" not in html


def test_summary_from_daemon_counts_free():
    reply = {"available": True, "gpus": [{"holder": None}, {"holder": "alice"}]}
    assert sf.GpuSummary.from_daemon(GpuReport.read(reply)) == sf.GpuSummary(True, 2, 1, None)


def test_a_seat_on_a_shared_gpu_is_counted_and_said_for_what_it_is():
    reply = {"available": True, "gpus": [
        {"holder": None, "holders": []},
        {"holder": "ann", "holders": ["ann", "bob"], "seats": 4, "name": "NVIDIA H100 80GB HBM3",
         "memory_total": 80 * 2**30}]}
    summary = sf.GpuSummary.from_daemon(GpuReport.read(reply))
    assert (summary.total, summary.free) == (5, 3)  # 1 GPU + 4 seats; 1 + 2 free
    assert summary.seats == {4: "a quarter of one NVIDIA H100 80GB HBM3: 20 GB, shared compute"}
    html = sf.render(summary, 1, {"q": {"display_name": "Quarter", "gpus": 1, "mem_limit": None, "cpu_limit": 0,
                                        "gpu_share": 4, "mig": ""}})
    assert "a quarter of one NVIDIA H100 80GB HBM3: 20 GB, shared compute" in html


@pytest.mark.parametrize("form, says", [
    ({"gpus": ["x"]}, "must be a whole number"),
    ({"gpus": ["1"], "image": ["evil"]}, "Unexpected form field 'image'"),
    ({"gpus": ["1", "2"]}, "sent 2 times"),
])
def test_parse_refuses_bad_forms(form, says):
    with pytest.raises(sf.FormError, match=re.escape(says)):
        sf.parse(form, {})


def test_parse_and_resolve_gpu_count():
    opts = sf.parse({"gpus": ["2"], "cpu_fallback": ["on"]}, {})
    assert opts == {"gpus": 2, "cpu_fallback": True}
    assert sf.resolve(opts, 2, {}) == {"gpus": 2, "cpu_fallback": True, "profile": None}


@pytest.mark.parametrize("options, quota, says", [
    ({"gpus": 3}, 2, "You asked for 3 GPUs; your quota is 2 GPUs."),
    ({"gpus": -1}, 2, "GPU count must be 0 or more"),
    ({"gpus": "1"}, 2, "whole number"),
    ({"profile": "nope"}, 2, "There is no profile 'nope'; the profiles are: cpu, big."),
    ({"profile": "big"}, 1, "your quota is 1 GPU"),
    ({"image": "x"}, 1, "Unknown option 'image'"),
    ({"cpu_fallback": "yes"}, 1, "cpu_fallback must be true or false"),
])
def test_resolve_refuses_what_the_api_could_send(options, quota, says):
    with pytest.raises(sf.FormError, match=re.escape(says)):
        sf.resolve(options, quota, PROFILES)


def test_profile_brings_its_gpus_and_its_name_for_the_daemon():
    assert sf.resolve({"profile": "big"}, 2, PROFILES) == {"gpus": 2, "cpu_fallback": False, "profile": "big"}


def test_jupyterhubs_own_xsrf_field_is_not_an_option():
    assert sf.parse({"_xsrf": ["t"], "gpus": ["1"]}, {}) == {"gpus": 1, "cpu_fallback": False}


def test_with_a_queue_the_form_says_how_long_one_may_wait_and_who_waits():
    html = sf.render(sf.GpuSummary(True, 4, 0, None, 2), 1, {}, queue_minutes=30)
    assert "0 of 4 GPUs free now, 2 waiting for one; your quota is 1 GPU" in html
    assert "you wait in a queue, first come first served, for up to 30 minutes" in html
    assert "Start CPU-only if no GPU is free after 30 minutes" in html
    summary = sf.GpuSummary.from_daemon(GpuReport.read({
        "available": True, "gpus": [{"holder": "a"}],
        "queue": [{"user": "b", "granted": False}, {"user": "c", "granted": True}]}))
    assert summary.waiting == 1


def test_the_form_says_what_the_server_gets():
    from appliance.limits import Limits

    def limits_of(profile):
        return Limits(profile["mem_limit"] if profile and profile["mem_limit"] else 8 * 2**30,
                      profile["cpu_limit"] if profile and profile["cpu_limit"] else 4.0, None)

    assert "Your server: 8 GB RAM, 4 CPUs, and the GPUs you choose." in sf.render(FOUR, 1, {}, None, limits_of)
    html = sf.render(FOUR, 2, PROFILES, None, limits_of)
    assert "(8 GB RAM, 4 CPUs, no GPU)" in html and "(64 GB RAM, 8 CPUs, 2 GPUs)" in html

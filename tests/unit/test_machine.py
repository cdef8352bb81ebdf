"""tests/machine.py reads `systemctl show` for both booted tiers (container and VM):
list properties come one line per entry or as one space-separated line."""

from tests.machine import parse_unit_props

# As systemd 257 prints them (systemctl-show.c): DeviceAllow= one line per entry,
# IPAddressDeny= and BindReadOnlyPaths= one line, entries separated by spaces.
SHOW = """DeviceAllow=/dev/nvidia3 rw
DeviceAllow=/dev/nvidiactl rw
DeviceAllow=/dev/nvidia-uvm rw
IPAddressDeny=0.0.0.0/0 ::/0
BindReadOnlyPaths=/etc/a:/etc/a -/opt/b:/opt/b:rbind
Environment=A=1 B=x=y
MainPID=4242
"""


def test_every_line_of_a_property_is_kept_in_order():
    props = parse_unit_props(SHOW, ("DeviceAllow",))
    assert props["DeviceAllow"].splitlines() == ["/dev/nvidia3 rw", "/dev/nvidiactl rw", "/dev/nvidia-uvm rw"]


def test_a_space_separated_list_is_one_value_as_printed():
    props = parse_unit_props(SHOW, ("IPAddressDeny", "BindReadOnlyPaths"))
    assert props["IPAddressDeny"].split() == ["0.0.0.0/0", "::/0"]
    assert props["BindReadOnlyPaths"].split() == ["/etc/a:/etc/a", "-/opt/b:/opt/b:rbind"]


def test_a_value_keeps_its_equals_signs_and_only_asked_names_come_back():
    assert parse_unit_props(SHOW, ("Environment", "MainPID")) == {"Environment": "A=1 B=x=y", "MainPID": "4242"}


def test_an_empty_list_is_empty_whether_printed_bare_or_not_at_all():
    assert parse_unit_props("DeviceAllow=\n", ("DeviceAllow", "IPAddressDeny")) == {
        "DeviceAllow": "", "IPAddressDeny": ""}

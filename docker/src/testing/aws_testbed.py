"""The AWS side of drover's offline test bed, against moto on loopback (boto3 ships with moto).

    python3 -c "$(cat aws_testbed.py)" ENDPOINT setup GROUP MAX_SIZE [SUBNET_CIDR]
    ... ENDPOINT instances GROUP          -> JSON [{"id", "lifecycle", "private_ip", "state"}]
    ... ENDPOINT set-desired GROUP N
    ... ENDPOINT terminate INSTANCE_ID    (decrements the desired capacity, as drover does)
    ... ENDPOINT group GROUP              -> JSON {"desired", "min", "max", "protected", "suspended"}

`setup` is idempotent. It makes the group the way drover's README asks operators to: a VPC
127.0.0.0/16 and subnet 127.0.1.0/24 or the one given (so instances get loopback private addresses a test can
serve SSH on), a launch template, min 0, new instances protected from scale-in, AZRebalance
suspended.
"""
import json
import sys

import boto3


def clients(endpoint):
    kw = dict(
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    return boto3.client("autoscaling", **kw), boto3.client("ec2", **kw)


def group_of(asg, name):
    groups = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
    return groups[0] if groups else None


def setup(asg, ec2, name, max_size, subnet_cidr="127.0.1.0/24"):
    if group_of(asg, name) is not None:
        return {"group": name, "created": False}
    vpc = ec2.create_vpc(CidrBlock="127.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(
        VpcId=vpc, CidrBlock=subnet_cidr, AvailabilityZone="us-east-1a"
    )["Subnet"]["SubnetId"]
    template = name + "-template"
    ec2.create_launch_template(
        LaunchTemplateName=template,
        LaunchTemplateData={"ImageId": "ami-00000000000000000", "InstanceType": "t3.micro"},
    )
    asg.create_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchTemplate={"LaunchTemplateName": template, "Version": "$Latest"},
        MinSize=0,
        MaxSize=max_size,
        DesiredCapacity=0,
        VPCZoneIdentifier=subnet,
        NewInstancesProtectedFromScaleIn=True,
    )
    asg.suspend_processes(AutoScalingGroupName=name, ScalingProcesses=["AZRebalance"])
    return {"group": name, "created": True, "subnet": subnet}


def instances(asg, ec2, name):
    group = group_of(asg, name)
    members = group["Instances"] if group else []
    if not members:
        return []
    ids = [i["InstanceId"] for i in members]
    described = {}
    for reservation in ec2.describe_instances(InstanceIds=ids)["Reservations"]:
        for i in reservation["Instances"]:
            described[i["InstanceId"]] = i
    out = []
    for m in members:
        ec2_view = described.get(m["InstanceId"], {})
        out.append(
            {
                "id": m["InstanceId"],
                "lifecycle": m["LifecycleState"],
                "private_ip": ec2_view.get("PrivateIpAddress"),
                "state": ec2_view.get("State", {}).get("Name"),
            }
        )
    return out


def main():
    endpoint, command, *args = sys.argv[1:]
    asg, ec2 = clients(endpoint)
    if command == "setup":
        result = setup(asg, ec2, args[0], int(args[1]), *args[2:3])
    elif command == "instances":
        result = instances(asg, ec2, args[0])
    elif command == "set-desired":
        asg.set_desired_capacity(
            AutoScalingGroupName=args[0], DesiredCapacity=int(args[1]), HonorCooldown=False
        )
        result = {"ok": True}
    elif command == "terminate":
        asg.terminate_instance_in_auto_scaling_group(
            InstanceId=args[0], ShouldDecrementDesiredCapacity=True
        )
        result = {"ok": True}
    elif command == "group":
        g = group_of(asg, args[0])
        result = {
            "desired": g["DesiredCapacity"],
            "min": g["MinSize"],
            "max": g["MaxSize"],
            "protected": g["NewInstancesProtectedFromScaleIn"],
            "suspended": [p["ProcessName"] for p in g["SuspendedProcesses"]],
        }
    else:
        raise SystemExit("unknown command " + command)
    print(json.dumps(result))


main()

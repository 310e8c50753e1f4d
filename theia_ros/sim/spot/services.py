"""gRPC servicers for the stand-in robot, built on the classes generated in ``bosdyn-api``.

THIS IS A STAND-IN FOR A SPOT ROBOT, NOT BOSTON DYNAMICS' SOFTWARE. Each servicer answers the
RPCs the theia-ros Spot adapter (and the bosdyn-client helpers it calls) use, with the response
fields those helpers read: common headers, lease-use results, statuses, feedback.

Imitates the services whose generated servicers it subclasses (bosdyn-api
``bosdyn/api/*_service_pb2_grpc.py``: auth, directory, time_sync, estop, lease, power,
robot_command, robot_state, image), with the semantics of bosdyn-api ``arm_command.proto``,
``basic_command.proto`` and ``lease.proto`` and of spot-sdk ``docs/concepts/arm/`` and
``docs/concepts/base_services.md``.
"""

from __future__ import annotations

import itertools
import math
import time

import cv2
import grpc
import numpy as np
from bosdyn.api import arm_command_pb2 as arm_pb2
from bosdyn.api import (
    auth_pb2,
    auth_service_pb2_grpc,
    basic_command_pb2,
    directory_pb2,
    directory_service_pb2_grpc,
    estop_pb2,
    estop_service_pb2_grpc,
    header_pb2,
    image_pb2,
    image_service_pb2_grpc,
    lease_pb2,
    lease_service_pb2_grpc,
    power_pb2,
    power_service_pb2_grpc,
    robot_command_pb2,
    robot_command_service_pb2_grpc,
    robot_id_pb2,
    robot_id_service_pb2_grpc,
    robot_state_pb2,
    robot_state_service_pb2_grpc,
    time_sync_pb2,
    time_sync_service_pb2_grpc,
)
from bosdyn.client import math_helpers
from bosdyn.util import (
    sec_to_nsec,
    set_timestamp_from_nsec,
    timestamp_to_nsec,
)

from .motion import Knot
from .robot import (
    ARM_JOINTS,
    BODY,
    CLAW_CLOSED_RAD,
    CLAW_OPEN_RAD,
    FLAT_BODY,
    GRIPPER_JOINT,
    HAND,
    IMAGE_SOURCES,
    ODOM,
    ReceivedCommand,
    StandInRobot,
)

AUTHORITY = "api.spot.robot"
_STANDING = basic_command_pb2.StandCommand.Feedback.STATUS_IS_STANDING
_SITTING = basic_command_pb2.SitCommand.Feedback.STATUS_IS_SITTING
# directory name -> service type, with the names a robot lists
SERVICES = {
    "robot-id": "bosdyn.api.RobotIdService",
    "auth": "bosdyn.api.AuthService",
    "directory": "bosdyn.api.DirectoryService",
    "time-sync": "bosdyn.api.TimeSyncService",
    "estop": "bosdyn.api.EstopService",
    "lease": "bosdyn.api.LeaseService",
    "power": "bosdyn.api.PowerService",
    "robot-command": "bosdyn.api.RobotCommandService",
    "robot-state": "bosdyn.api.RobotStateService",
    "image": "bosdyn.api.ImageService",
}


class _Base:
    def __init__(self, robot: StandInRobot) -> None:
        self.robot = robot

    def _ok(self, response, request):
        """Fill the common response header (robot clock) as every bosdyn helper checks it."""
        now_ns = sec_to_nsec(self.robot.robot_now_s())
        response.header.request_header.CopyFrom(request.header)
        set_timestamp_from_nsec(response.header.request_received_timestamp, now_ns)
        set_timestamp_from_nsec(response.header.response_timestamp, now_ns)
        response.header.error.code = header_pb2.CommonError.CODE_OK
        return response


class RobotId(_Base, robot_id_service_pb2_grpc.RobotIdServiceServicer):
    def GetRobotId(self, request, context):
        response = robot_id_pb2.RobotIdResponse()
        response.robot_id.serial_number = "standin-0001"
        response.robot_id.species = "spot"
        response.robot_id.nickname = "stand-in (not a robot)"
        return self._ok(response, request)


class Auth(_Base, auth_service_pb2_grpc.AuthServiceServicer):
    def GetAuthToken(self, request, context):
        robot = self.robot
        response = auth_pb2.GetAuthTokenResponse()
        if request.token:
            ok = request.token == robot.token
            bad = auth_pb2.GetAuthTokenResponse.STATUS_INVALID_TOKEN
        else:
            ok = request.username == robot.username and request.password == robot.password
            bad = auth_pb2.GetAuthTokenResponse.STATUS_INVALID_LOGIN
        response.status = auth_pb2.GetAuthTokenResponse.STATUS_OK if ok else bad
        if ok:
            response.token = robot.token
            with robot.lock:
                robot.events.append("auth")
        return self._ok(response, request)


class Directory(_Base, directory_service_pb2_grpc.DirectoryServiceServicer):
    def ListServiceEntries(self, request, context):
        response = directory_pb2.ListServiceEntriesResponse()
        for name, type_ in SERVICES.items():
            response.service_entries.add(name=name, type=type_, authority=AUTHORITY)
        return self._ok(response, request)


class TimeSync(_Base, time_sync_service_pb2_grpc.TimeSyncServiceServicer):
    _ids = itertools.count(1)

    def TimeSyncUpdate(self, request, context):
        robot = self.robot
        if not robot.time_sync_up:
            context.abort(grpc.StatusCode.UNAVAILABLE, "time-sync service down (stand-in)")
        response = self._ok(time_sync_pb2.TimeSyncUpdateResponse(), request)
        with robot.lock:
            if not request.clock_identifier or request.clock_identifier != robot.clock_identifier:
                robot.clock_identifier = f"standin-clock-{next(self._ids)}"
        response.clock_identifier = robot.clock_identifier
        state = response.state
        if request.HasField("previous_round_trip"):
            rt = request.previous_round_trip
            client_tx, client_rx = (timestamp_to_nsec(rt.client_tx),
                                    timestamp_to_nsec(rt.client_rx))
            server_rx, server_tx = (timestamp_to_nsec(rt.server_rx),
                                    timestamp_to_nsec(rt.server_tx))
            # NTP estimate: skew = ((server_rx - client_tx) + (server_tx - client_rx)) / 2
            skew_ns = ((server_rx - client_tx) + (server_tx - client_rx)) // 2
            rtt_ns = max((client_rx - client_tx) - (server_tx - server_rx), 0)
            with robot.lock:  # the best estimate is the round with the shortest trip (NTP)
                best = robot.time_sync_best.get(robot.clock_identifier)
                if best is None or rtt_ns <= best[0]:
                    best = robot.time_sync_best[robot.clock_identifier] = (rtt_ns, skew_ns)
            rtt_ns, skew_ns = best
            state.best_estimate.clock_skew.FromNanoseconds(skew_ns)
            state.best_estimate.round_trip_time.FromNanoseconds(rtt_ns)
            state.status = time_sync_pb2.TimeSyncState.STATUS_OK
            with robot.lock:
                if "time_sync" not in robot.events:
                    robot.events.append("time_sync")
        else:
            state.status = time_sync_pb2.TimeSyncState.STATUS_MORE_SAMPLES_NEEDED
        return response


class Estop(_Base, estop_service_pb2_grpc.EstopServiceServicer):
    def GetEstopSystemStatus(self, request, context):
        robot = self.robot
        response = estop_pb2.GetEstopSystemStatusResponse()
        level = estop_pb2.ESTOP_LEVEL_CUT if robot.estopped else estop_pb2.ESTOP_LEVEL_NONE
        if robot.estop_registered:
            entry = response.status.endpoints.add(stop_level=level)
            entry.endpoint.role = "PDB_rooted"
            entry.endpoint.name = "operator-estop"
            entry.endpoint.unique_id = "standin-estop-1"
            entry.endpoint.timeout.seconds = 9
        response.status.stop_level = level
        with robot.lock:
            robot.events.append("estop_status")
        return self._ok(response, request)


def _grant(robot: StandInRobot, request, response, status_ok: int, event: str) -> None:
    """Acquire/Take: a new body lease for the caller, in the response (robot lock held)."""
    response.lease.CopyFrom(robot.grant_lease(request.header.client_name))
    response.lease_owner.client_name = robot.lease_owner
    response.status = status_ok
    robot.events.append(event)


class Lease(_Base, lease_service_pb2_grpc.LeaseServiceServicer):
    def AcquireLease(self, request, context):
        robot = self.robot
        response = lease_pb2.AcquireLeaseResponse()
        with robot.lock:
            if request.resource != BODY:
                response.status = lease_pb2.AcquireLeaseResponse.STATUS_INVALID_RESOURCE
            elif robot.lease_owner is not None:
                response.status = lease_pb2.AcquireLeaseResponse.STATUS_RESOURCE_ALREADY_CLAIMED
                response.lease_owner.client_name = robot.lease_owner
            else:
                _grant(robot, request, response, lease_pb2.AcquireLeaseResponse.STATUS_OK,
                       "lease_acquire")
        return self._ok(response, request)

    def TakeLease(self, request, context):
        robot = self.robot
        response = lease_pb2.TakeLeaseResponse()
        with robot.lock:
            _grant(robot, request, response, lease_pb2.TakeLeaseResponse.STATUS_OK,
                   "lease_take")
        return self._ok(response, request)

    def ReturnLease(self, request, context):
        robot = self.robot
        response = lease_pb2.ReturnLeaseResponse()
        with robot.lock:
            use = robot.lease_use(request.lease)
            if use.status == lease_pb2.LeaseUseResult.STATUS_OK:
                robot.lease_owner = None
                response.status = lease_pb2.ReturnLeaseResponse.STATUS_OK
                robot.events.append("lease_return")
            else:
                response.status = lease_pb2.ReturnLeaseResponse.STATUS_NOT_ACTIVE_LEASE
        return self._ok(response, request)

    def RetainLease(self, request, context):
        response = lease_pb2.RetainLeaseResponse()
        with self.robot.lock:
            response.lease_use_result.CopyFrom(self.robot.lease_use(request.lease))
        return self._ok(response, request)

    def ListLeases(self, request, context):
        robot = self.robot
        response = lease_pb2.ListLeasesResponse()
        with robot.lock:
            entry = response.resources.add(resource=BODY)
            entry.lease.CopyFrom(robot.active_lease())
            entry.lease_owner.client_name = robot.lease_owner or ""
        return self._ok(response, request)


class Power(_Base, power_service_pb2_grpc.PowerServiceServicer):
    _ids = itertools.count(1)

    def PowerCommand(self, request, context):
        robot = self.robot
        response = power_pb2.PowerCommandResponse()
        with robot.lock:
            use = robot.lease_use(request.lease)
            response.lease_use_result.CopyFrom(use)
            if use.status != lease_pb2.LeaseUseResult.STATUS_OK:
                response.status = power_pb2.STATUS_UNKNOWN
            elif robot.estopped:
                response.status = power_pb2.STATUS_ESTOPPED
            else:
                on = request.request == power_pb2.PowerCommandRequest.REQUEST_ON_MOTORS
                if on:
                    robot.begin_power_on()
                else:
                    robot.power_off_now()
                robot.events.append("power_on" if on else "power_off")
                # the robot answers "in progress" and finishes later, seen through feedback
                response.status = power_pb2.STATUS_IN_PROGRESS
                response.power_command_id = next(self._ids)
        return self._ok(response, request)

    def PowerCommandFeedback(self, request, context):
        with self.robot.lock:
            done = self.robot.power_done_s is None
        status = power_pb2.STATUS_SUCCESS if done else power_pb2.STATUS_IN_PROGRESS
        return self._ok(power_pb2.PowerCommandFeedbackResponse(status=status), request)


_CARTESIAN_STATUS = {
    "IN_PROGRESS": arm_pb2.ArmCartesianCommand.Feedback.STATUS_IN_PROGRESS,
    "COMPLETE": arm_pb2.ArmCartesianCommand.Feedback.STATUS_TRAJECTORY_COMPLETE,
    "STALLED": arm_pb2.ArmCartesianCommand.Feedback.STATUS_TRAJECTORY_STALLED,
    "CANCELLED": arm_pb2.ArmCartesianCommand.Feedback.STATUS_TRAJECTORY_CANCELLED,
}
_NAMED_STATUS = {
    "IN_PROGRESS": arm_pb2.NamedArmPositionsCommand.Feedback.STATUS_IN_PROGRESS,
    "COMPLETE": arm_pb2.NamedArmPositionsCommand.Feedback.STATUS_COMPLETE,
    "STALLED_HOLDING_ITEM": arm_pb2.NamedArmPositionsCommand.Feedback.STATUS_STALLED_HOLDING_ITEM,
}
_FEEDBACK = basic_command_pb2.RobotCommandFeedbackStatus


class RobotCommand(_Base, robot_command_service_pb2_grpc.RobotCommandServiceServicer):
    _ids = itertools.count(1)

    def __init__(self, robot: StandInRobot) -> None:
        super().__init__(robot)
        self.kinds: dict[int, str] = {}  # command id -> what it was, for feedback

    def RobotCommand(self, request, context):
        received_s = time.monotonic()
        robot = self.robot
        response = robot_command_pb2.RobotCommandResponse()
        with robot.lock:
            use = robot.lease_use(request.lease)
            response.lease_use_result.CopyFrom(use)
            command_id = next(self._ids)
            verdict = self._execute(request, command_id) if use.status == use.STATUS_OK \
                else None
            if verdict is None:
                verdict = "lease:" + lease_pb2.LeaseUseResult.Status.Name(use.status)
            elif verdict == "ok":
                response.status = robot_command_pb2.RobotCommandResponse.STATUS_OK
                response.robot_command_id = command_id
                self.kinds[command_id] = robot.events[-1]
            else:
                response.status = robot_command_pb2.RobotCommandResponse.Status.Value(verdict)
            robot.commands.append(ReceivedCommand(received_s, request, verdict,
                                                  command_id if verdict == "ok" else 0))
        return self._ok(response, request)

    def _execute(self, request, command_id: int) -> str:
        """Start one command on the robot; return "ok" or a STATUS_* name."""
        robot, cmd = self.robot, request.command
        if robot.reject_status is not None:
            return robot_command_pb2.RobotCommandResponse.Status.Name(robot.reject_status)
        if request.clock_identifier != robot.clock_identifier:
            return "STATUS_NO_TIMESYNC"
        if cmd.HasField("full_body_command"):
            if cmd.full_body_command.HasField("safe_power_off_request"):
                if robot.motors_on:
                    robot.begin_sit(power_off=True)  # sits, then cuts motor power
                robot.events.append("safe_power_off")
                return "ok"
            if not robot.motors_on:
                return "STATUS_NOT_POWERED_ON"
            robot.events.append("full_body_stop")
            return "ok"
        if not robot.motors_on:
            return "STATUS_NOT_POWERED_ON"
        sync = cmd.synchronized_command
        event = None
        if sync.mobility_command.HasField("stand_request"):
            robot.begin_stance(True)
            event = "stand"
        elif sync.mobility_command.HasField("sit_request"):
            robot.begin_stance(False)
            event = "sit"
        arm = sync.arm_command
        if arm.HasField("arm_cartesian_command"):
            verdict = self._cartesian(arm.arm_cartesian_command, command_id)
            if verdict != "ok":
                return verdict
            event = "arm_cartesian"
        elif arm.HasField("arm_stop_command"):
            robot.arm.command_stop(command_id)
            event = "arm_stop"
        elif arm.HasField("named_arm_position_command"):
            position = arm.named_arm_position_command.position
            if position == arm_pb2.NamedArmPositionsCommand.POSITIONS_STOW:
                robot.arm.command_named(command_id, "stow", robot.robot_now_s())
                event = "stow"
            elif position == arm_pb2.NamedArmPositionsCommand.POSITIONS_READY:
                robot.arm.command_named(command_id, "ready", robot.robot_now_s())
                event = "ready"
            else:
                return "STATUS_UNSUPPORTED"
        if sync.gripper_command.HasField("claw_gripper_command"):
            points = sync.gripper_command.claw_gripper_command.trajectory.points
            if points:
                angle = points[-1].point
                fraction = (angle - CLAW_CLOSED_RAD) / (CLAW_OPEN_RAD - CLAW_CLOSED_RAD)
                robot.arm.claw_target = min(max(fraction, 0.0), 1.0)
            event = event or "gripper"
        if event is None:
            return "STATUS_UNSUPPORTED"
        robot.events.append(event)
        return "ok"

    def _cartesian(self, cart, command_id: int) -> str:
        robot = self.robot
        if cart.root_frame_name not in (BODY, ODOM, FLAT_BODY):
            return "STATUS_UNKNOWN_FRAME"
        traj = cart.pose_trajectory_in_task
        if not traj.points:
            return "STATUS_INVALID_REQUEST"
        now_s = robot.robot_now_s()
        reference_s = timestamp_to_nsec(traj.reference_time) * 1e-9 \
            if traj.HasField("reference_time") else now_s
        to_body = robot.odom_tform_body.inverse() if cart.root_frame_name == ODOM else None
        knots = []
        for point in traj.points:
            pose = math_helpers.SE3Pose.from_proto(point.pose)
            numbers = [pose.x, pose.y, pose.z, pose.rot.w, pose.rot.x, pose.rot.y, pose.rot.z]
            if not all(math.isfinite(v) for v in numbers):
                return "STATUS_INVALID_REQUEST"
            linear = point.velocity.linear  # unset: zero, the message's default
            vel = np.array([linear.x, linear.y, linear.z])
            if to_body is not None:
                pose = to_body * pose
                vel = np.array(to_body.rot.transform_point(*vel))
            t_s = reference_s + point.time_since_reference.ToNanoseconds() * 1e-9
            knots.append(Knot(t_s, np.array([pose.x, pose.y, pose.z]),
                              np.array([pose.rot.w, pose.rot.x, pose.rot.y, pose.rot.z]), vel))
        if robot.arm.stowed:
            robot.cartesian_while_stowed += 1
        max_error = cart.max_pos_tracking_error.value \
            if cart.HasField("max_pos_tracking_error") else None
        robot.arm.command_cartesian(command_id, knots, now_s, max_error)
        return "ok"

    def RobotCommandFeedback(self, request, context):
        response = robot_command_pb2.RobotCommandFeedbackResponse()
        robot = self.robot
        command_id = request.robot_command_id
        kind = self.kinds.get(command_id, "")
        sync = response.feedback.synchronized_feedback
        with robot.lock:
            robot.feedback_requests += 1
            arm_status = robot.arm.status.get(command_id, "")
            tracking_error = robot.arm.tracking_error_m
            standing, moving = robot.standing, robot.stance_done_s is not None
        if kind in ("stand", "sit"):
            mobility = sync.mobility_command_feedback
            mobility.status = _FEEDBACK.STATUS_PROCESSING
            if kind == "stand":
                mobility.stand_feedback.status = (
                    _STANDING if standing and not moving
                    else basic_command_pb2.StandCommand.Feedback.STATUS_IN_PROGRESS)
            else:
                mobility.sit_feedback.status = (
                    _SITTING if not standing and not moving
                    else basic_command_pb2.SitCommand.Feedback.STATUS_IN_PROGRESS)
        elif kind in ("stow", "ready", "arm_cartesian", "arm_stop"):
            arm = sync.arm_command_feedback
            arm.status = (_FEEDBACK.STATUS_COMMAND_OVERRIDDEN if arm_status == "OVERRIDDEN"
                          else _FEEDBACK.STATUS_PROCESSING)
            if kind == "arm_cartesian":
                arm.arm_cartesian_feedback.status = _CARTESIAN_STATUS.get(
                    arm_status, arm_pb2.ArmCartesianCommand.Feedback.STATUS_UNKNOWN)
                arm.arm_cartesian_feedback.measured_pos_tracking_error = tracking_error
            elif kind == "arm_stop":
                arm.arm_stop_feedback.SetInParent()
            else:
                arm.named_arm_position_feedback.status = _NAMED_STATUS.get(
                    arm_status, arm_pb2.NamedArmPositionsCommand.Feedback.STATUS_UNKNOWN)
        else:
            response.feedback.full_body_feedback.status = _FEEDBACK.STATUS_PROCESSING
        return self._ok(response, request)


class RobotState(_Base, robot_state_service_pb2_grpc.RobotStateServiceServicer):
    def GetRobotState(self, request, context):
        robot = self.robot
        response = robot_state_pb2.RobotStateResponse()
        state = response.robot_state
        now_ns = sec_to_nsec(robot.robot_now_s())
        power_states = robot_state_pb2.PowerState
        with robot.lock:
            power = state.power_state
            power.motor_power_state = (
                power_states.MOTOR_POWER_STATE_ON if robot.motors_on
                else power_states.MOTOR_POWER_STATE_POWERING_ON if robot.power_done_s is not None
                else power_states.MOTOR_POWER_STATE_OFF)
            set_timestamp_from_nsec(power.timestamp, now_ns)
            estop = state.estop_states.add(name="standin-estop",
                                           type=robot_state_pb2.EStopState.TYPE_SOFTWARE)
            estop.state = (robot_state_pb2.EStopState.STATE_ESTOPPED if robot.estopped
                           else robot_state_pb2.EStopState.STATE_NOT_ESTOPPED)
            kin_state = state.kinematic_state
            set_timestamp_from_nsec(kin_state.acquisition_timestamp, now_ns)
            for name, q in zip(ARM_JOINTS, robot.arm.q):
                kin_state.joint_states.add(name=name).position.value = float(q)
            gripper_q = CLAW_CLOSED_RAD + robot.arm.claw * (CLAW_OPEN_RAD - CLAW_CLOSED_RAD)
            kin_state.joint_states.add(name=GRIPPER_JOINT).position.value = gripper_q
            edges = kin_state.transforms_snapshot.child_to_parent_edge_map
            edges[BODY].parent_frame_name = ""  # body is the root, as in Spot's state snapshot
            for child, pose in ((ODOM, robot.odom_tform_body.inverse()),
                                (HAND, robot.body_tform_hand),
                                (FLAT_BODY, math_helpers.SE3Pose.from_identity())):
                edges[child].parent_frame_name = BODY
                edges[child].parent_tform_child.CopyFrom(pose.to_proto())
            manipulator = state.manipulator_state
            claw = robot.arm.claw if robot.false_gripper_reading is None \
                else robot.false_gripper_reading
            manipulator.gripper_open_percentage = 100.0 * claw
            manipulator.is_gripper_holding_item = robot.arm.holding
            manipulator.stow_state = (robot_state_pb2.ManipulatorState.STOWSTATE_STOWED
                                      if robot.arm.stowed
                                      else robot_state_pb2.ManipulatorState.STOWSTATE_DEPLOYED)
            manipulator.carry_state = (robot_state_pb2.ManipulatorState.CARRY_STATE_CARRIABLE
                                       if robot.arm.holding else
                                       robot_state_pb2.ManipulatorState.CARRY_STATE_NOT_CARRIABLE)
        return self._ok(response, request)


class Image(_Base, image_service_pb2_grpc.ImageServiceServicer):
    def ListImageSources(self, request, context):
        response = image_pb2.ListImageSourcesResponse()
        height, width = self.robot.image_hw
        for name in IMAGE_SOURCES:
            response.image_sources.add(name=name, rows=height, cols=width)
        return self._ok(response, request)

    def GetImage(self, request, context):
        robot = self.robot
        response = image_pb2.GetImageResponse()
        for image_request in request.image_requests:
            item = response.image_responses.add()
            item.source.name = image_request.image_source_name
            if image_request.image_source_name not in IMAGE_SOURCES:
                item.status = image_pb2.ImageResponse.STATUS_UNKNOWN_CAMERA
                continue
            colour = IMAGE_SOURCES[image_request.image_source_name]
            with robot.lock:
                rgb, taken_s = robot.camera_frame(image_request.image_source_name)
                set_timestamp_from_nsec(item.shot.acquisition_time, sec_to_nsec(taken_s))
            shot = item.shot
            shot.frame_name_image_sensor = image_request.image_source_name
            shot.image.rows, shot.image.cols = rgb.shape[:2]
            pixels = rgb if colour else rgb[..., 0]
            shot.image.pixel_format = (image_pb2.Image.PIXEL_FORMAT_RGB_U8 if colour
                                       else image_pb2.Image.PIXEL_FORMAT_GREYSCALE_U8)
            if image_request.image_format == image_pb2.Image.FORMAT_RAW:
                shot.image.format = image_pb2.Image.FORMAT_RAW
                shot.image.data = pixels.tobytes()
            else:  # JPEG is what the robot picks for visual sources by default
                quality = image_request.quality_percent or 75
                bgr = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR) if colour else pixels
                _, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
                shot.image.format = image_pb2.Image.FORMAT_JPEG
                shot.image.data = jpeg.tobytes()
            item.status = image_pb2.ImageResponse.STATUS_OK
        return self._ok(response, request)


def add_all(server: grpc.Server, robot: StandInRobot) -> RobotCommand:
    """Register every stand-in servicer on ``server``; return the command servicer."""
    command = RobotCommand(robot)
    robot_id_service_pb2_grpc.add_RobotIdServiceServicer_to_server(RobotId(robot), server)
    auth_service_pb2_grpc.add_AuthServiceServicer_to_server(Auth(robot), server)
    directory_service_pb2_grpc.add_DirectoryServiceServicer_to_server(Directory(robot), server)
    time_sync_service_pb2_grpc.add_TimeSyncServiceServicer_to_server(TimeSync(robot), server)
    estop_service_pb2_grpc.add_EstopServiceServicer_to_server(Estop(robot), server)
    lease_service_pb2_grpc.add_LeaseServiceServicer_to_server(Lease(robot), server)
    power_service_pb2_grpc.add_PowerServiceServicer_to_server(Power(robot), server)
    robot_command_service_pb2_grpc.add_RobotCommandServiceServicer_to_server(command, server)
    robot_state_service_pb2_grpc.add_RobotStateServiceServicer_to_server(RobotState(robot), server)
    image_service_pb2_grpc.add_ImageServiceServicer_to_server(Image(robot), server)
    return command

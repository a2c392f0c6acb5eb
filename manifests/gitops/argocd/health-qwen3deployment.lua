-- Argo CD health of a Qwen3Deployment, from the status the qwenfleet operator writes.
hs = {status = "Progressing", message = "Waiting for the qwenfleet operator"}
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local generation = obj.metadata.generation or 0
if (obj.status.observedGeneration or 0) < generation then
  hs.message = "The operator has not yet reconciled generation " .. generation
  return hs
end
local conditions = {}
for _, c in ipairs(obj.status.conditions) do
  conditions[c.type] = c
end
local ready = conditions["Ready"]
local degraded = conditions["Degraded"]
local plan = conditions["PlanFeasible"]
if plan ~= nil and plan.status == "False" then
  hs.status = "Degraded"
  hs.message = plan.message or "No plan fits this spec"
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or ready.reason
  return hs
end
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = (degraded.reason or "Degraded") .. ": " .. (degraded.message or "")
  return hs
end
if ready ~= nil then
  local stuck = {InvalidSpec = true, SecretMissing = true, PVCMissing = true, LeaderWorkerSetMissing = true,
                 KEDAMissing = true, KarpenterMissing = true}
  if stuck[ready.reason] then
    hs.status = "Degraded"
  end
  hs.message = (ready.reason or "NotReady") .. ": " .. (ready.message or "")
end
return hs

-- Argo CD health check for whittle.dev/HardeningWorkflow (see docs/argocd.md).
-- Written for gopher-lua (Lua 5.1); tested with lua5.1 by tests/argocd_health.rs.
hs = {}

local progressing = {
  Pending = true,
  Instrumenting = true,
  Observing = true,
  Collecting = true,
  Hardening = true,
  Verifying = true,
}

-- The Ready condition: its reason says why a workflow waits or failed.
local function ready_reason(status)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == "Ready" and c.reason ~= nil and c.reason ~= "" then
      return c.reason
    end
  end
  return nil
end

-- "Phase (Reason): detail", leaving out what is missing.
local function describe(phase, reason, detail)
  local text = phase
  if reason ~= nil and reason ~= phase then
    text = text .. " (" .. reason .. ")"
  end
  if detail ~= nil and detail ~= "" then
    text = text .. ": " .. detail
  end
  return text
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Pending: waiting for the operator to pick up the workflow"
  return hs
end

local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local phase = status.phase or "Pending"
local reason = ready_reason(status)

if progressing[phase] then
  local detail = status.message
  local reports = status.reports
  if reports ~= nil and (phase == "Observing" or phase == "Collecting") then
    local counts = tostring(reports.received or 0) .. "/" .. tostring(#(reports.expected or {})) .. " pod(s) reported"
    if detail ~= nil and detail ~= "" then
      detail = counts .. "; " .. detail
    else
      detail = counts
    end
  end
  hs.status = "Progressing"
  hs.message = describe(phase, reason, detail)
  return hs
end

if phase == "Succeeded" then
  local detail = status.message
  if status.hardenedImage ~= nil then
    detail = "hardened image " .. status.hardenedImage
    local result = status.result
    if result ~= nil and result.reductionPercent ~= nil then
      local pct = result.reductionPercent
      if pct >= 0 then
        detail = detail .. " (" .. tostring(pct) .. "% smaller"
      else
        detail = detail .. " (" .. tostring(-pct) .. "% larger"
      end
      detail = detail .. ", " .. tostring(result.sourceBytes) .. " -> " .. tostring(result.hardenedBytes) .. " bytes)"
    end
  end
  hs.status = "Healthy"
  hs.message = describe(phase, nil, detail)
  return hs
end

if phase == "Failed" then
  local detail = status.message
  local v = status.verification
  if v ~= nil then
    local verdict = "verification " .. tostring(v.result) .. " (" .. tostring(v.reason) .. ")"
    if v.pod ~= nil then
      verdict = verdict .. " in pod " .. v.pod
    end
    if v.container ~= nil then
      verdict = verdict .. " container " .. v.container
    end
    if v.message ~= nil and v.message ~= "" and v.message ~= detail then
      verdict = verdict .. ": " .. v.message
    end
    if detail ~= nil and detail ~= "" then
      detail = detail .. "; " .. verdict
    else
      detail = verdict
    end
  end
  hs.status = "Degraded"
  hs.message = describe(phase, reason or (v and v.reason), detail)
  return hs
end

hs.status = "Unknown"
hs.message = "unknown phase " .. tostring(phase)
return hs
